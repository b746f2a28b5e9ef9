"""The audit log: one JSON line per guarded request, for whoever must show a deletion was honoured.

A request is recorded when the classifier flagged it for a target, or when the safety net acted on
its answer (a target's phrase approached in an answer to a conversation about no target). A record
says when, which request, which API key (by id, never the key), which targets were detected
(`targets`) and whose phrases the answer was kept from (`blocked`), under which policy version, and
what the guard did:
- "penalised": the guard ran on the answer (penalties, and blocks inside the engine where needed);
- "rephrased": the answer approached a forbidden span and was rewound and rephrased at least once;
- "filtered":  the answer was cut before a forbidden span (finish_reason "content_filter").
No prompt or answer text unless `--audit-text` asks for it. The file rotates by size
(`logging.handlers.RotatingFileHandler`).
"""

from __future__ import annotations

import json
import logging
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

ROTATE_BYTES = 50 * 1024 * 1024
ROTATE_KEEP = 5


class AuditLog:
    def __init__(self, path: Path, include_text: bool = False, max_bytes: int = ROTATE_BYTES, backups: int = ROTATE_KEEP):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.include_text = include_text
        self._logger = logging.Logger(f"guard.audit.{path}")  # its own logger: never propagates to the root
        handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)

    def record(self, *, request_id: str, key_id: str, target_ids: tuple[str, ...], policy_version: int,
               finish_reason: str | None, rewinds: int, blocked: tuple[str, ...] = (), prompt: str | None = None,
               answer: str | None = None) -> None:
        action = "filtered" if finish_reason == "content_filter" else "rephrased" if rewinds else "penalised"
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", "request_id": request_id,
                 "key_id": key_id, "targets": list(target_ids), "blocked": list(blocked),
                 "policy_version": policy_version, "action": action, "rewinds": rewinds}
        if self.include_text:
            entry.update(prompt=prompt, answer=answer)
        self._logger.info(json.dumps(entry))

    def close(self) -> None:
        for handler in self._logger.handlers:
            handler.close()
