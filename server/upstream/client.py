"""The proxy's connection to its upstream OpenAI-compatible servers: pooled, bounded in time, failures named.

One upstream, or several serving the same model (`--upstream URL,URL,...`), which the proxy spreads
requests over itself, round robin. An upstream that refuses or drops a connection is left out for
`RESTING_SECONDS` (then tried again). A request that failed so before any of its answer came (refused,
or a pooled connection the upstream had closed) goes to the next one: asking again costs an upstream
some work, never an answer sent twice. A stream that fails part-way is not asked again. The attempts
of one guarded answer (a rewind's resubmission) go to the same upstream, where its prefix is cached
(`affinity`).

What each failure of the upstream becomes (server.engine's exceptions; server.protocol.errors maps them to
what the proxy's clients see, always an OpenAI-shaped error and never a hang):
- the upstream's own 4xx: RequestRejected, carrying its status and body;
- connection refused or dropped before an answer: EngineUnavailable (503, `upstream_unavailable`);
- no byte within the timeout: EngineTimeout (504, `upstream_timeout`);
- an upstream 5xx or a reply that is not what the API promises: EngineFailed (502, `upstream_error`).
  A reply is checked against the shape its reader gives (server.protocol.upstream_shapes), and a misfit is
  logged with the upstream's status.
Streams are read with httpx-sse.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import zlib
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import BaseModel, ValidationError

from server.engine import EngineError, EngineFailed, EngineTimeout, EngineUnavailable, RequestRejected
from server.settings import upstream_urls

log = logging.getLogger("guard.upstream")
RESTING_SECONDS = 5.0


def _unavailable(exc: Exception) -> EngineUnavailable:
    return EngineUnavailable(f"the upstream LLM server is unavailable ({type(exc).__name__})", "upstream_unavailable")


def _timeout() -> EngineTimeout:
    return EngineTimeout("the upstream LLM server did not answer in time", "upstream_timeout")


def bad_gateway(message: str) -> EngineFailed:
    return EngineFailed(f"the upstream LLM server failed: {message}", "upstream_error")


def _misfit(problem: str, status: int) -> EngineFailed:
    """A reply that is not what the API promises: logged with the upstream's status, a 502."""
    log.warning("upstream answered %s: %s", status, problem)
    return bad_gateway(problem)


def fitted(payload: Any, shape: type[BaseModel] | None, what: str, status: int) -> Any:
    """`payload` as it came, once it fits `shape` (None: any JSON); else a 502, logged."""
    if shape is not None:
        try:
            shape.model_validate(payload)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise _misfit(f"{what} does not fit OpenAI's shape ({where + ': ' if where else ''}{error['msg']})",
                          status) from None
    return payload


class Upstream:
    def __init__(self, urls: str | Sequence[str], api_key: str | None = None, timeout: float = 30.0,
                 connect_timeout: float = 5.0, max_connections: int = 256,
                 transport: httpx.AsyncBaseTransport | None = None):
        """`urls`: the upstreams' OpenAI bases, e.g. http://host:8000/v1 (upstream_urls). `timeout`
        bounds every wait for a byte (a streamed answer may take longer in all; each gap may not)."""
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.urls = upstream_urls(urls)
        self.url = ",".join(self.urls)
        self.client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport)
        self._turn = itertools.count()
        self._resting_until = dict.fromkeys(self.urls, 0.0)

    async def aclose(self) -> None:
        await self.client.aclose()

    def _order(self, affinity: str | None) -> list[str]:
        """The upstreams to try, in order: the chosen one first (round robin, or the one `affinity`
        hashes to), then the others; those resting after a failure go last."""
        now = time.monotonic()
        ready = [url for url in self.urls if self._resting_until[url] <= now]
        ready = ready or list(self.urls)  # every one failed lately: try them anyway
        first = zlib.crc32(affinity.encode()) if affinity is not None else next(self._turn)
        first %= len(ready)
        ordered = ready[first:] + ready[:first]
        return ordered + [url for url in self.urls if url not in ordered]

    def _rest(self, url: str, exc: Exception) -> None:
        if self._resting_until[url] <= time.monotonic():
            log.warning("upstream %s failed (%s); leaving it out for %.0f s", url, type(exc).__name__, RESTING_SECONDS)
        self._resting_until[url] = time.monotonic() + RESTING_SECONDS

    async def _reach(self, bases: list[str],
                     send: Callable[[str], Awaitable[httpx.Response]]) -> tuple[str, httpx.Response]:
        """(base, `send(base)`'s response) for the first of `bases` that answers; a connection that fails
        before any answer rests its upstream and tries the next one; the last one's failure raises."""
        for i, base in enumerate(bases):
            try:
                return base, await send(base)
            except httpx.TimeoutException:
                raise _timeout() from None
            except httpx.TransportError as exc:
                self._rest(base, exc)
                if i == len(bases) - 1:
                    raise _unavailable(exc) from None
        raise AssertionError("no upstream to try")  # pragma: no cover: there is always one

    async def get(self, path: str) -> dict:
        return await self._json("GET", path)

    async def failing(self) -> dict[str, str]:
        """Each upstream that does not list its models now, with why (all asked at once; for /health)."""
        async def why(url: str) -> str | None:
            try:
                await self._json("GET", "/models", url=url)
                return None
            except EngineError as exc:
                return exc.message

        found = await asyncio.gather(*(why(url) for url in self.urls))
        return {url: problem for url, problem in zip(self.urls, found) if problem is not None}

    def problem(self, failing: dict[str, str]) -> str | None:
        """None while any upstream answers; else why none does (`failing`: as `failing()` found them)."""
        if len(failing) < len(self.urls):
            return None
        return "; ".join(failing.values() if len(self.urls) == 1 else (f"{u}: {m}" for u, m in failing.items()))

    async def post(self, path: str, body: dict, timeout: float | None = None,
                   shape: type[BaseModel] | None = None) -> dict:
        """`timeout`: the wait for the whole reply, if not the client's (a non-streamed answer says
        nothing until it is complete). `shape`: what the reply must fit."""
        return await self._json("POST", path, body, timeout, shape)

    async def _json(self, method: str, path: str, body: dict | None = None, timeout: float | None = None,
                    shape: type[BaseModel] | None = None, url: str | None = None) -> dict:
        extra = {"timeout": httpx.Timeout(timeout, connect=self.client.timeout.connect)} if timeout else {}
        _, response = await self._reach([url] if url else self._order(None),
                                        lambda base: self.client.request(method, base + path, json=body, **extra))
        _raise_for_status(response.status_code, response.content)
        try:
            payload = response.json()
        except ValueError:
            raise _misfit("the reply is not JSON", response.status_code) from None
        return fitted(payload, shape, "the reply", response.status_code)

    @asynccontextmanager
    async def stream(self, path: str, body: dict, shape: type[BaseModel] | None = None,
                     affinity: str | None = None) -> AsyncIterator[AsyncIterator[Any]]:
        """`async with upstream.stream(path, body) as events:` the server-sent events' JSON payloads,
        up to `[DONE]`, each fitting `shape`. Errors before the first event raise here; later ones
        raise from the iterator. `affinity`: streams with the same one go to the same upstream."""
        base, response = await self._reach(self._order(affinity), lambda base: self.client.send(
            self.client.build_request("POST", base + path, json=body), stream=True))
        try:
            if response.status_code >= 400:
                try:
                    content = await response.aread()
                except httpx.TimeoutException:
                    raise _timeout() from None
                except httpx.TransportError as exc:
                    raise _unavailable(exc) from None
                _raise_for_status(response.status_code, content)
            yield _events(EventSource(response), shape, response.status_code,
                          lambda exc: self._rest(base, exc))
        finally:
            await response.aclose()


async def _events(source: EventSource, shape: type[BaseModel] | None, status: int,
                  dropped) -> AsyncIterator[Any]:
    """`dropped(exc)`: the connection failed mid-stream."""
    try:
        async for sse in source.aiter_sse():
            if sse.data == "[DONE]":
                return
            try:
                event = json.loads(sse.data)
            except ValueError:
                raise _misfit("a streamed event is not JSON", status) from None
            if isinstance(event, dict) and "error" in event:  # vLLM reports in-band once streaming
                error = event["error"]
                raise bad_gateway(str(error.get("message", error)) if isinstance(error, dict) else str(error))
            yield fitted(event, shape, "a streamed event", status)
    except SSEError as exc:
        raise bad_gateway(f"not a stream of server-sent events ({exc})") from None
    except httpx.TimeoutException:
        raise _timeout() from None
    except httpx.TransportError as exc:
        dropped(exc)
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
        raw = None
    if not isinstance(raw, dict):
        raw = {"error": {"message": content.decode(errors="replace")[:500], "type": "invalid_request_error",
                         "param": None, "code": None}}
    error = raw.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    raise RequestRejected(str(message or f"upstream answered {status}"), status, raw)
