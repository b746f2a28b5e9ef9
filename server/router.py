"""The one OpenAI router: chat and text completions (streamed and whole), models, health, metrics,
each defined once, over the `Serving` bound at start-up (server.serving.base). A completion's job is
made here, at the edge, from the validated body; the serving answers it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from server.ops import metrics
from server.protocol import responses
from server.protocol.requests import ChatCompletionRequest, CompletionRequest
from server.protocol.responses import ERRORS, STREAM
from server.serving.base import CompletionJob, Serving
from server.state.live_policy import LivePolicy

router = APIRouter()
COMPLETION_RESPONSES = {**ERRORS, 200: {"content": {"application/json": {}, **STREAM}}}


def _serving(request: Request) -> Serving:
    return request.app.state.serving


@router.get("/health", response_model=responses.Health, responses={503: {"model": responses.Health}})
async def health(request: Request) -> JSONResponse:
    report = await _serving(request).health()
    live: LivePolicy = request.app.state.policy
    body = responses.Health(status="unhealthy" if report.problem else "ok", problem=report.problem,
                            targets=len(live.restrictions.policy.targets), policy_version=live.enforced_version,
                            policy_error=live.error, rate_limit_error=request.app.state.rate_limiter.error,
                            **report.fields)
    return JSONResponse(body.model_dump(), status_code=503 if report.problem else 200)


@router.get("/v1/models", response_model=responses.ModelList, responses=ERRORS)
async def models(request: Request) -> JSONResponse:
    return JSONResponse(await _serving(request).models())


@router.get("/metrics", response_class=PlainTextResponse, responses=ERRORS)
async def prometheus_metrics(request: Request) -> Response:
    return Response(metrics.render(request.app.state.metrics), media_type=metrics.CONTENT_TYPE)


@router.post("/v1/chat/completions", response_model=responses.ChatCompletion, responses=COMPLETION_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _complete(body, request)


@router.post("/v1/completions", response_model=responses.Completion, responses=COMPLETION_RESPONSES)
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await _complete(body, request)


async def _complete(body: ChatCompletionRequest | CompletionRequest, request: Request) -> Response:
    job = CompletionJob(body, await request.body(), getattr(request.state, "key_id", "anonymous"))
    return await _serving(request).complete(job)
