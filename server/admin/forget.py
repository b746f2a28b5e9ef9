"""The admin routes: forget targets at run time (`POST /v1/forget`, `GET /v1/forget`,
`DELETE /v1/forget/{id}`), the same for `guard serve` and `guard proxy`.

A change is written to the policy store as a new version and answered at once; the server then
rebuilds in the background (server.state.live_policy) and enforces it within seconds. `GET /v1/forget`
tells the store's version from the enforced one, so a client can wait for its change to be live.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import ValidationError

from guard.policy import Target, describe_validation_error
from server.protocol.errors import OpenAIError, bad_request
from server.protocol.responses import ERRORS
from server.state.live_policy import LivePolicy
from server.state.policy_store import StoreError, TargetExists, TargetNotFound

router = APIRouter()


def _live(request: Request) -> LivePolicy:
    return request.app.state.policy


def _who(request: Request) -> str:
    return getattr(request.state, "key_id", "anonymous")


def _unavailable(exc: StoreError) -> OpenAIError:
    """The store cannot take a change now: nothing was written; the client may try again."""
    return OpenAIError(503, f"{exc}; nothing was changed", type="server_error", code="store_unavailable")


def _target(target: Target) -> dict:
    return {"object": "forget.target", **target.model_dump()}


@router.post("/v1/forget", status_code=201, responses=ERRORS)
async def add_target(target: Target, request: Request) -> dict:
    live = _live(request)
    try:
        version = await asyncio.to_thread(live.store.add, target, _who(request))
    except TargetExists:
        raise OpenAIError(409, f"id: a target `{target.id}` exists already; delete it first to replace it",
                          param="id", code="target_exists") from None
    except StoreError as exc:
        raise _unavailable(exc) from None
    except ValidationError as exc:  # the policy with it would hold more than the guard can enforce
        message = describe_validation_error(exc)
        raise bad_request(message, param=message.split(":")[0], code="policy_limit") from None
    live.changed()
    return {**_target(target), "version": version}


@router.get("/v1/forget", responses=ERRORS)
async def list_targets(request: Request) -> dict:
    live = _live(request)
    try:
        current = await asyncio.to_thread(live.store.current)
    except StoreError as exc:  # the store is gone: what is enforced, and why nothing newer can be
        policy, version, error = live.restrictions.policy, live.enforced_version, str(exc)
    else:
        policy, version, error = current.policy, current.version, live.error
    return {"object": "list", "data": [_target(t) for t in policy.targets], "version": version,
            "enforced_version": live.enforced_version, "error": error}


@router.delete("/v1/forget/{target_id}", responses=ERRORS)
async def delete_target(target_id: str, request: Request) -> dict:
    live = _live(request)
    try:
        version = await asyncio.to_thread(live.store.delete, target_id, _who(request))
    except TargetNotFound:
        raise OpenAIError(404, f"no forget target `{target_id}`", param="id", code="target_not_found") from None
    except StoreError as exc:
        raise _unavailable(exc) from None
    live.changed()
    return {"id": target_id, "object": "forget.target.deleted", "deleted": True, "version": version}
