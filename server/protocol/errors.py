"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}}, 4xx for bad input.

The one place where what went wrong becomes an HTTP status: request validation, the routes' own
`OpenAIError`s, and the engines' exceptions (server.engine), whether raised before a response
starts (an HTTP error) or during a stream (`in_band`: the error event a stream ends with).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from server.engine import EngineError, EngineFailed, EngineTimeout, EngineUnavailable, RequestRejected

log = logging.getLogger("guard.server")


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, raw: dict | None = None):
        """`raw`: a body to answer with as it is (an upstream's own 4xx)."""
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.raw = raw

    def body(self) -> dict:
        if self.raw is not None:
            return self.raw
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


_ENGINE_STATUS = {EngineUnavailable: 503, EngineTimeout: 504, EngineFailed: 502}


def from_engine(exc: EngineError) -> OpenAIError:
    """What an engine's failure is to the client."""
    if isinstance(exc, RequestRejected):
        return OpenAIError(exc.status, exc.message, param=exc.param, raw=exc.body)
    status = next((s for kind, s in _ENGINE_STATUS.items() if isinstance(exc, kind)), 500)
    return OpenAIError(status, exc.message, type="server_error", code=exc.code)


def in_band(exc: Exception) -> dict:
    """The error event of a stream that fails after its head was sent."""
    if isinstance(exc, EngineError):
        return from_engine(exc).body()
    if isinstance(exc, OpenAIError):
        return exc.body()
    log.error("stream failed", exc_info=exc)
    return OpenAIError(500, "internal server error", type="server_error").body()


def describe_request_error(exc: RequestValidationError) -> OpenAIError:
    error = _most_specific(exc.errors())
    loc = _field_path(error.get("loc", ()))
    param = ".".join(loc) or None
    if error.get("type") == "json_invalid":
        return bad_request("The request body is not valid JSON.", code="invalid_json")
    if not loc and error.get("type") in ("model_attributes_type", "dict_type"):
        return bad_request("The request body must be a JSON object.")
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    return bad_request(f"{param}: {message}" if param else message, param=param)


_LOCATIONS = ("body", "query", "path", "header", "cookie")  # the first part of a FastAPI error's location
_SCALAR_TAGS = {"str", "int", "float", "bool", "none", "bytes", "dict", "list"}


def _is_union_tag(part: object) -> bool:
    """Whether `part` of an error's location names a member of a union (`str`, `list[str]`, `ContentPart`,
    `function-after[...]`) rather than a field: OpenAI's fields are lower-case identifiers."""
    return isinstance(part, str) and (part in _SCALAR_TAGS or "[" in part or "-" in part or part[:1].isupper())


def _field_path(loc) -> list[str]:
    loc = list(loc)
    if loc and loc[0] in _LOCATIONS:
        loc = loc[1:]
    return [str(part) for part in loc if not _is_union_tag(part)]


def _most_specific(errors: list[dict]) -> dict:
    """The first error; or where a value failed every member of a union, the error of the member of its
    type, the deepest: for `"stop": ["a", ""]` the one about `stop.1` being empty, not the one saying that
    a list is not a string."""
    first = errors[0]
    loc = list(first.get("loc", ()))
    union_at = next((i for i, part in enumerate(loc) if _is_union_tag(part)), None)
    if union_at is None:
        return first
    same_value = [e for e in errors if list(e.get("loc", ()))[:union_at] == loc[:union_at]]
    of_its_type = [e for e in same_value if not _is_type_mismatch(e)] or same_value
    return max(of_its_type, key=lambda e: len(_field_path(e.get("loc", ()))))


def _is_type_mismatch(error: dict) -> bool:  # string_type, list_type, model_type, none_required, ...
    return error.get("type", "").endswith("_type") or error.get("type") == "none_required"


def _allowed_methods(request: Request) -> str:
    """Every method of the path, for a 405's `Allow` (Starlette names those of its first route only:
    `POST` for a path served by a GET route and a POST route)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] != Match.NONE:  # PARTIAL: the path matches, the method does not
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return from_engine(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return describe_request_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        response = OpenAIError(exc.status_code, str(exc.detail), type=kind).response()
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["allow"] = _allowed_methods(request)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return OpenAIError(500, "internal server error", type="server_error").response()
