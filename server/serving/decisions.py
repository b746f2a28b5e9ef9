"""A job's decision and its record, for both servings (server.serving.base).

`classify`: what the job is restricted by, timed and counted, failing closed (no answer without the
guard's decision). `record`: what the guard then did to each choice's answer, into the metrics and
the audit log, once the client has it; serve, the full proxy and the relay all end their answers here.
"""

from __future__ import annotations

import asyncio

from guard.guarded_stream import CONTENT_FILTER
from guard.restriction import Restrictions
from server.ops import metrics
from server.protocol.errors import OpenAIError
from server.serving.base import CompletionJob
from server.state.audit import AuditLog


class Decisions:
    """Bound at start-up to the app's metrics and audit log (None: no audit log)."""

    def __init__(self, app_metrics: metrics.Metrics, audit: AuditLog | None):
        self.metrics, self.audit = app_metrics, audit

    async def classify(self, job: CompletionJob, restrictions: Restrictions) -> None:
        """The job's restriction, decided off the event loop (the classifier's encoder, name and span
        retrieval take milliseconds to seconds on a long conversation: other requests go on meanwhile)."""
        try:
            with self.metrics.classifier.time():
                job.restriction = await asyncio.to_thread(restrictions.for_conversation, job.conversation)
        except Exception as exc:
            raise OpenAIError(503, "the guard could not classify this request", type="server_error") from exc
        job.mark("classified")
        metrics.observe_restriction(self.metrics, job.restriction)

    def record(self, job: CompletionJob) -> None:
        """Each choice that has ended and is not recorded yet. Its `violations`: what each rewind was
        for, then, if the answer was cut, what the cut was for."""
        restriction = job.restriction
        for choice in job.choices:
            if not choice.finished or choice.recorded:
                continue
            choice.recorded = True
            violations = choice.violations
            cut = choice.finish_reason == CONTENT_FILTER and bool(violations)
            rewound = violations[:-1] if cut else violations
            metrics.observe_blocks(self.metrics, tuple(t for v in rewound for t in restriction.targets_of([v])),
                                   restriction.targets_of(violations[-1:]) if cut else ())
            if self.audit is not None and (restriction.target_ids or violations):
                self.audit.record(request_id=job.choice_id(choice.index), key_id=job.key_id,
                                  target_ids=restriction.target_ids, policy_version=restriction.policy_version,
                                  finish_reason=choice.finish_reason, rewinds=len(rewound),
                                  blocked=restriction.targets_of(violations), prompt=job.conversation.asked,
                                  answer=choice.text)

    def tokens(self, job: CompletionJob) -> None:
        """The job's prompt and completion tokens, once every choice has ended."""
        job.mark("done")
        metrics.observe_tokens(self.metrics, job.prompt_tokens, job.completion_tokens)
