"""The proxy's upstream client: what each upstream failure becomes, never a hang."""

import asyncio
import json
import socket

import httpx
import pytest

from server.engine import EngineFailed, EngineTimeout, EngineUnavailable, RequestRejected
from server.protocol.errors import from_engine
from server.upstream.client import Upstream
from server.protocol.upstream_shapes import ChatReply, TextChunk, TokenChunk


def mock(handler) -> Upstream:
    return Upstream("http://upstream.test/v1", transport=httpx.MockTransport(handler), timeout=2.0)


def call(coroutine):
    return asyncio.run(coroutine)


async def _post_and_close(upstream: Upstream, body=None, shape=None):
    try:
        return await upstream.post("/chat/completions", body or {"model": "m"}, shape=shape)
    finally:
        await upstream.aclose()


def test_an_upstream_4xx_is_passed_through_as_it_is():
    raw = {"error": {"message": "max_tokens is too large", "type": "BadRequestError", "param": "max_tokens",
                     "code": 400}, "extra": "kept"}
    upstream = mock(lambda request: httpx.Response(400, json=raw))
    with pytest.raises(RequestRejected) as caught:
        call(_post_and_close(upstream))
    assert caught.value.status == 400 and from_engine(caught.value).body() == raw


@pytest.mark.parametrize("status", [500, 502, 503])
def test_an_upstream_5xx_is_a_502(status):
    upstream = mock(lambda request: httpx.Response(status, text="boom"))
    with pytest.raises(EngineFailed) as caught:
        call(_post_and_close(upstream))
    assert from_engine(caught.value).status == 502 and caught.value.code == "upstream_error"


def test_the_request_reaches_the_upstream_unchanged():
    seen = {}

    def handler(request: httpx.Request):
        seen.update(json.loads(request.content), path=request.url.path, auth=request.headers.get("authorization"))
        return httpx.Response(200, json={"id": "x"})
    upstream = Upstream("http://upstream.test/v1", api_key="k", transport=httpx.MockTransport(handler))
    assert call(_post_and_close(upstream, {"model": "m", "custom_field": [1, 2]})) == {"id": "x"}
    assert seen == {"model": "m", "custom_field": [1, 2], "path": "/v1/chat/completions", "auth": "Bearer k"}


def test_a_refused_connection_is_a_503():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineUnavailable) as caught:
        call(_post_and_close(Upstream(f"http://127.0.0.1:{port}/v1")))
    assert from_engine(caught.value).status == 503 and caught.value.code == "upstream_unavailable"


def test_an_upstream_that_never_answers_is_a_504_within_the_timeout():
    async def scenario():
        server = await asyncio.start_server(lambda r, w: asyncio.sleep(30), "127.0.0.1", 0)  # accepts, says nothing
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(5):
                await _post_and_close(Upstream(f"http://127.0.0.1:{port}/v1", timeout=0.5))
        finally:
            server.close()
    with pytest.raises(EngineTimeout) as caught:
        call(scenario())
    assert from_engine(caught.value).status == 504 and caught.value.code == "upstream_timeout"


def test_a_stream_that_breaks_off_before_done_is_an_error_not_a_silent_end():
    body = 'data: {"choices": [{"index": 0, "text": "Hel"}]}\n\n'  # no [DONE]
    upstream = mock(lambda request: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"}))

    async def read():
        got = []
        async with upstream.stream("/completions", {"model": "m", "stream": True}) as events:
            async for event in events:
                got.append(event)
        return got
    with pytest.raises(EngineUnavailable):
        call(read())


def test_a_whole_reply_may_take_longer_than_the_wait_for_a_byte():
    """A non-streamed answer says nothing until it is complete: `post(..., timeout)` waits for it."""
    async def slow(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(1.0)
        body = b'{"ok": true}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        writer.close()

    async def scenario(timeout):
        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        upstream = Upstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", timeout=0.3)
        try:
            return await upstream.post("/chat/completions", {"model": "m"}, timeout)
        finally:
            await upstream.aclose()
            server.close()
    assert call(scenario(5.0)) == {"ok": True}
    with pytest.raises(EngineTimeout):
        call(scenario(None))


@pytest.mark.parametrize("reply", [
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": 42}, "finish_reason": "stop"}]},
    {"choices": ["hi"]},
    [1, 2, 3],
    {"choices": []},
    {"choices": [{"index": 0, "message": "hi", "finish_reason": "stop"}]},
    {"choices": [{"index": "0", "message": {"content": "hi"}, "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "message": {"content": "hi", "tool_calls": [{"function": {"arguments": {}}}]}}]},
])
def test_a_whole_reply_that_does_not_fit_openais_shape_is_a_502_naming_what_is_wrong(reply, caplog):
    upstream = mock(lambda request: httpx.Response(200, json=reply))
    with pytest.raises(EngineFailed) as caught:
        call(_post_and_close(upstream, shape=ChatReply))
    assert from_engine(caught.value).status == 502 and "does not fit OpenAI's shape" in caught.value.message
    assert "upstream answered 200" in caplog.text


def test_a_fitting_reply_comes_back_as_it_was_unknown_fields_included():
    reply = {"choices": [{"index": 0, "message": {"content": "hi", "reasoning": "x"}, "finish_reason": "stop"}],
             "kv_transfer_params": None}
    upstream = mock(lambda request: httpx.Response(200, json=reply))
    assert call(_post_and_close(upstream, shape=ChatReply)) == reply


@pytest.mark.parametrize("shape, event", [
    (TextChunk, {"choices": [{"index": 0, "text": 7}]}),
    (TextChunk, {"choices": [{"index": 0, "text": "a"}, {"index": 1, "text": "b"}]}),  # one choice per event
    (TokenChunk, {"choices": [{"index": 0, "text": "a"}]}),  # the full level needs token ids
    (TokenChunk, {"choices": [{"index": 0, "text": "a", "token_ids": ["1"]}]}),
])
def test_a_streamed_event_that_does_not_fit_is_an_error_after_the_good_ones(shape, event):
    good = {"choices": [{"index": 0, "text": "Hel", "token_ids": [1]}]}
    body = f"data: {json.dumps(good)}\n\ndata: {json.dumps(event)}\n\ndata: [DONE]\n\n"
    upstream = mock(lambda request: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"}))
    got = []

    async def read():
        async with upstream.stream("/completions", {"model": "m", "stream": True}, shape) as events:
            async for event in events:
                got.append(event)
    with pytest.raises(EngineFailed):
        call(read())
    assert got == [good]


# -- several upstreams (`--upstream URL,URL`) ------------------------------------------------------
def pool(down: set[str], seen: list[str], streamed: bool = False, dropped: set[str] = frozenset()) -> Upstream:
    """Upstreams a, b and c; a connection to one in `down` is refused, one to one in `dropped` closed
    before any answer (a pooled connection the upstream had closed)."""
    def handler(request: httpx.Request):
        host = request.url.host
        if host in down:
            raise httpx.ConnectError("refused", request=request)
        if host in dropped:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        seen.append(host)
        if streamed:
            event = {"choices": [{"index": 0, "text": host, "token_ids": [1], "finish_reason": "stop"}]}
            return httpx.Response(200, text=f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n",
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"data": [{"id": "m"}]})
    return Upstream("http://a/v1, http://b/v1,http://c/v1", transport=httpx.MockTransport(handler))


def test_requests_go_round_robin_and_around_an_upstream_that_refuses():
    seen: list[str] = []
    upstream = pool({"b"}, seen)

    async def requests(n):
        for _ in range(n):
            await upstream.post("/completions", {"model": "m"})
    call(requests(6))
    assert seen[:2] == ["a", "c"]  # b refused the second: it went to c, and nobody saw an error
    assert "b" not in seen and seen.count("a") == 3 and seen.count("c") == 3  # b rests meanwhile


def test_a_connection_dropped_before_any_answer_is_asked_again_elsewhere():
    seen: list[str] = []
    upstream = pool(set(), seen, streamed=True, dropped={"a"})

    async def one():
        async with upstream.stream("/completions", {"model": "m"}, TokenChunk) as events:
            return [event async for event in events]
    assert call(one())[0]["choices"][0]["text"] == "b" and seen == ["b"]


def test_an_answers_attempts_stay_on_one_upstream():
    seen: list[str] = []
    upstream = pool(set(), seen, streamed=True)

    async def attempts(affinity, n):
        for _ in range(n):
            async with upstream.stream("/completions", {"model": "m"}, TokenChunk, affinity=affinity) as events:
                async for _ in events:
                    pass
    call(attempts("answer-1", 4))
    assert len(set(seen)) == 1  # where its prefix is cached
    seen.clear()
    call(attempts(None, 3))
    assert sorted(seen) == ["a", "b", "c"]


def test_only_when_every_upstream_refuses_is_a_request_refused():
    seen: list[str] = []
    upstream = pool({"a", "b", "c"}, seen)
    with pytest.raises(EngineUnavailable):
        call(upstream.post("/completions", {"model": "m"}))
    failing = call(upstream.failing())
    assert set(failing) == set(upstream.urls) and all("ConnectError" in why for why in failing.values())
    assert "http://a/v1: " in upstream.problem(failing) and "http://c/v1: " in upstream.problem(failing)


def test_an_upstream_that_fails_beside_one_that_answers_is_named_but_not_a_problem():
    upstream = pool({"a", "b"}, [])
    failing = call(upstream.failing())
    assert list(failing) == ["http://a/v1", "http://b/v1"]
    assert upstream.problem(failing) is None  # c answers: healthy
    assert upstream.problem({}) is None
