"""A guarded request's decision and its record, for every route that answers through the guard.

`classify`: what the request is restricted by, timed and counted, failing closed (no answer without
the guard's decision). `record`: what the guard then did to the answer, into the metrics and the
audit log; serve, the full proxy and the relay all end their answers here.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from guard.conversation import Conversation
from guard.guarded_stream import CONTENT_FILTER
from guard.leaks import Violation
from guard.restriction import Restriction, Restrictions
from server.ops import metrics
from server.state.audit import AuditLog
from server.protocol.errors import OpenAIError


async def classify(request: Request, restrictions: Restrictions, conversation: Conversation) -> Restriction:
    """The request's restriction, decided off the event loop (the classifier's encoder, name and span
    retrieval take milliseconds to seconds on a long conversation: other requests go on meanwhile)."""
    app_metrics = request.app.state.metrics
    try:
        with app_metrics.classifier.time():
            restriction = await asyncio.to_thread(restrictions.for_conversation, conversation)
    except Exception as exc:
        raise OpenAIError(503, "the guard could not classify this request", type="server_error") from exc
    metrics.observe_restriction(app_metrics, restriction)
    return restriction


def record(request: Request, log: AuditLog | None, restriction: Restriction, request_id: str,
           finish_reason: str | None, violations: tuple[Violation, ...], prompt: str, answer: str) -> None:
    """`violations`: what each rewind was for, then, if the answer was cut, what the cut was for."""
    cut = finish_reason == CONTENT_FILTER and bool(violations)
    rewound = violations[:-1] if cut else violations
    metrics.observe_blocks(request.app.state.metrics, tuple(t for v in rewound for t in restriction.targets_of([v])),
                           restriction.targets_of(violations[-1:]) if cut else ())
    if log is not None and (restriction.target_ids or violations):
        log.record(request_id=request_id, key_id=getattr(request.state, "key_id", "anonymous"),
                   target_ids=restriction.target_ids, policy_version=restriction.policy_version,
                   finish_reason=finish_reason, rewinds=len(rewound), blocked=restriction.targets_of(violations),
                   prompt=prompt, answer=answer)
