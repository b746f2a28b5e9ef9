"""API keys, scopes and per-key rate limits, in front of every route of `guard serve` and `guard proxy`.

- User keys (`GUARD_API_KEYS`, comma-separated) open the OpenAI routes; admin keys
  (`GUARD_ADMIN_KEYS`) open those and the admin routes (`/v1/forget...`, `/metrics`).
- No key or an unknown one: 401; a user key on an admin route: 403; `/health` is always open.
- Keys are compared in constant time, against every configured key, and never logged: a key is
  known in logs and audit records by its id, the first 8 hex digits of its SHA-256.
- Neither variable set: the server is open, and says so loudly at start-up.
- Per-key limits (requests and tokens per minute; tokens are the completion tokens a request may
  ask for: server.state.rate_limits) answer 429 with `Retry-After`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from server.protocol.errors import OpenAIError
from server.state.rate_limits import RateLimiter

log = logging.getLogger("guard.auth")
OPEN_PATHS = ("/health",)
ADMIN_PREFIXES = ("/v1/forget", "/metrics")
DEFAULT_RESERVED_TOKENS = 256  # charged for a request that sets no max_tokens


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_keys(text: str | None) -> tuple[str, ...]:
    return tuple(k.strip() for k in (text or "").split(",") if k.strip())


@dataclass(frozen=True)
class Keys:
    user: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()

    @classmethod
    def parse(cls, user: str | None, admin: str | None) -> "Keys":
        """From comma-separated lists (GUARD_API_KEYS, GUARD_ADMIN_KEYS: server.settings)."""
        return cls(parse_keys(user), parse_keys(admin))

    @property
    def open(self) -> bool:
        return not self.user and not self.admin

    def scope_of(self, presented: str) -> Literal["admin", "user"] | None:
        """The key's scope; every configured key is compared, in constant time, whatever matches."""
        admin = user = False
        for key in self.admin:
            admin |= hmac.compare_digest(presented.encode(), key.encode())
        for key in self.user:
            user |= hmac.compare_digest(presented.encode(), key.encode())
        return "admin" if admin else "user" if user else None


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None):
    error = OpenAIError(status, message, type="invalid_request_error" if status < 500 else "server_error", code=code)
    body = json.dumps(error.body()).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return body, raw_headers


class AuthMiddleware:
    """Checks the bearer key of every HTTP request before any route runs (pure ASGI: streams untouched)."""

    def __init__(self, app: ASGIApp, keys: Keys, limiter: RateLimiter):
        self.app, self.keys, self.limiter = app, keys, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        admin_route = scope["path"].startswith(ADMIN_PREFIXES)
        who = "anonymous"
        if not self.keys.open:
            presented = _bearer(scope)
            role = self.keys.scope_of(presented) if presented else None
            if role is None:
                return await _send(send, 401, "Missing or invalid API key: send it as `Authorization: Bearer KEY`.",
                                   "invalid_api_key", {"www-authenticate": "Bearer"})
            if admin_route and role != "admin":
                return await _send(send, 403, "This route needs an admin key.", "insufficient_scope")
            who = key_id(presented)
        scope.setdefault("state", {})["key_id"] = who
        if not admin_route and scope["method"] == "POST" and self.limiter.active:
            receive, tokens = await _peek_tokens(receive)
            wait = await self.limiter.charge(who, tokens)
            if wait is not None:
                return await _send(send, 429, "Rate limit reached for this key; retry later.", "rate_limit_exceeded",
                                   {"retry-after": str(max(1, math.ceil(wait)))})
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1")
            return text[7:].strip() if text.lower().startswith("bearer ") else None
    return None


async def _peek_tokens(receive: Receive) -> tuple[Receive, int]:
    """Read the body to find the tokens a request may use, then replay it to the app."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    try:
        data = json.loads(body)
        tokens = data.get("max_completion_tokens") or data.get("max_tokens") or DEFAULT_RESERVED_TOKENS
        tokens = tokens if isinstance(tokens, int) and tokens > 0 else DEFAULT_RESERVED_TOKENS
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, nested too deep to parse
        tokens = DEFAULT_RESERVED_TOKENS  # the route answers the broken body with a 400
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay, tokens


async def _send(send: Send, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
    body, raw_headers = _error(status, message, code, headers)
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def install_auth(app: FastAPI, keys: Keys, limiter: RateLimiter) -> Keys:
    if keys.open:
        log.warning("NO API KEYS SET: every route is open to anyone who can reach this server. "
                    "Set GUARD_API_KEYS (users) and GUARD_ADMIN_KEYS (admins).")
    else:
        log.info("API keys: %d user, %d admin (ids %s)", len(keys.user), len(keys.admin),
                 ", ".join(key_id(k) for k in keys.user + keys.admin))
    app.add_middleware(AuthMiddleware, keys=keys, limiter=limiter)
    return keys
