"""The proxy's connection to an upstream OpenAI-compatible server: pooled, bounded in time, errors mapped.

What the proxy's clients see when the upstream misbehaves, always an OpenAI-shaped error and never a
hang:
- the upstream's own 4xx: returned as it is (status and body);
- connection refused or dropped before an answer: 503 `upstream_unavailable`;
- no byte within the timeout: 504 `upstream_timeout`;
- an upstream 5xx or a reply that is not what the API promises: 502 `upstream_error`.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx

from server.errors import OpenAIError


class UpstreamError(OpenAIError):
    """An upstream 4xx, passed through with its own body."""

    def __init__(self, status: int, raw: Any):
        message = raw.get("error", {}).get("message", "") if isinstance(raw, dict) and isinstance(
            raw.get("error"), dict) else str(raw)
        super().__init__(status, message or f"upstream answered {status}")
        self.raw = raw

    def body(self) -> dict:
        return self.raw if isinstance(self.raw, dict) else super().body()


def _unavailable(exc: Exception) -> OpenAIError:
    return OpenAIError(503, f"the upstream LLM server is unavailable ({type(exc).__name__})", type="server_error",
                       code="upstream_unavailable")


def _timeout() -> OpenAIError:
    return OpenAIError(504, "the upstream LLM server did not answer in time", type="server_error",
                       code="upstream_timeout")


def bad_gateway(message: str) -> OpenAIError:
    return OpenAIError(502, f"the upstream LLM server failed: {message}", type="server_error", code="upstream_error")


class Upstream:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0, connect_timeout: float = 5.0,
                 max_connections: int = 256, transport: httpx.AsyncBaseTransport | None = None):
        """`url`: the upstream's OpenAI base, e.g. http://host:8000/v1. `timeout` bounds every wait
        for a byte (a streamed answer may take longer in all; each gap may not)."""
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def get(self, path: str) -> dict:
        return await self._json("GET", path)

    async def post(self, path: str, body: dict, timeout: float | None = None) -> dict:
        """`timeout`: the wait for the whole reply, if not the client's (a non-streamed answer says
        nothing until it is complete)."""
        return await self._json("POST", path, body, timeout)

    async def _json(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> dict:
        extra = {"timeout": httpx.Timeout(timeout, connect=self.client.timeout.connect)} if timeout else {}
        try:
            response = await self.client.request(method, path, json=body, **extra)
        except httpx.TimeoutException:
            raise _timeout() from None
        except httpx.TransportError as exc:
            raise _unavailable(exc) from None
        _raise_for_status(response.status_code, response.content)
        try:
            return response.json()
        except ValueError:
            raise bad_gateway("the reply is not JSON") from None

    @asynccontextmanager
    async def stream(self, path: str, body: dict) -> AsyncIterator[AsyncIterator[dict]]:
        """`async with upstream.stream(path, body) as events:` the server-sent events' JSON payloads,
        up to `[DONE]`. Errors before the first event raise here; later ones raise from the iterator."""
        try:
            async with self.client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    _raise_for_status(response.status_code, await response.aread())
                yield _events(response)
        except httpx.TimeoutException:
            raise _timeout() from None
        except httpx.TransportError as exc:
            raise _unavailable(exc) from None


async def _events(response: httpx.Response) -> AsyncIterator[dict]:
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise bad_gateway("a streamed event is not JSON") from None
            if isinstance(event, dict) and "error" in event:  # vLLM reports in-band once streaming
                raise bad_gateway(str(event["error"].get("message", event["error"]))
                                   if isinstance(event["error"], dict) else str(event["error"]))
            yield event
    except httpx.TimeoutException:
        raise _timeout() from None
    except httpx.TransportError as exc:
        raise _unavailable(exc) from None
    raise _unavailable(ConnectionError("the stream ended before [DONE]"))


def _raise_for_status(status: int, content: bytes) -> None:
    if status < 400:
        return
    if status >= 500:
        raise bad_gateway(f"status {status}")
    try:
        raw = json.loads(content)
    except ValueError:
        raw = {"error": {"message": content.decode(errors="replace")[:500], "type": "invalid_request_error",
                         "param": None, "code": None}}
    raise UpstreamError(status, raw)
