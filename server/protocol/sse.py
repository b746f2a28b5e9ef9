"""The one writer of server-sent event streams (sse-starlette), for every streamed answer.

A stream is its events as `data:` lines, then `data: [DONE]`. Whatever fails once the head has gone
out (the engine dies, the upstream breaks off, anything else) ends the stream with an error event in
OpenAI's shape and then `[DONE]`: a client never waits on a stream that will not end.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from pydantic import BaseModel
from sse_starlette import EventSourceResponse

from server.protocol.errors import in_band


def sse_response(events: AsyncIterator[BaseModel | dict[str, Any]], headers: dict[str, str]) -> EventSourceResponse:
    """`events`: pydantic models (their explicitly set fields are written) or JSON-able dicts."""
    async def frames() -> AsyncIterator[dict[str, str]]:
        try:
            async for event in events:
                data = event.model_dump_json(exclude_unset=True) if isinstance(event, BaseModel) else json.dumps(event)
                yield {"data": data}
        except Exception as exc:  # noqa: BLE001 - reported in-band, see the module docstring
            yield {"data": json.dumps(in_band(exc))}
        finally:
            await _close(events)
        yield {"data": "[DONE]"}
    return EventSourceResponse(frames(), headers=headers, sep="\n")


async def _close(events: AsyncIterator) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
