"""Every body of the API is JSON, whatever content type the client says: `curl -d '{...}'` sends
`application/x-www-form-urlencoded` (curl's default) and many scripts send none. Such a request to a
`/v1/` route is read as JSON, as OpenAI's API reads it; a body that is not JSON is still a 400
naming the problem (server.protocol.errors)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class JsonBodies:
    """ASGI middleware: a POST, PUT or PATCH to `/v1/...` whose content type is not JSON is read as JSON."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH")
                and scope["path"].startswith("/v1/")):
            headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
            given = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
            if not (given == b"application/json" or given.endswith(b"+json")):
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
