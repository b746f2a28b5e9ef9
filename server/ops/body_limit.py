"""The request-size limit: a body over `--max-request-bytes` is answered 413 in OpenAI's error shape,
before it is parsed. A declared `Content-Length` over the limit is refused before a byte of the body
is read; a body sent without one (chunked) is read up to the limit, and refused as soon as it passes it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.protocol.errors import OpenAIError


class BodyLimit:
    """ASGI middleware; the outermost, so that nothing reads a body it refuses."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) <= self.limit:
                return await self.app(scope, receive, send)  # the server reads no more than it declares
            return await self._refuse(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, when the client leaves
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = OpenAIError(413, f"The request body is larger than this server accepts ({self.limit} bytes; "
                            "--max-request-bytes).", code="request_too_large")
        await error.response()(scope, receive, send)
