"""A conversation as the guard reads it: which texts the classifier embeds, which it scans for names.

One place decides this for every route (serve, the full proxy, the bias/filter relay, the
benchmarks), so detection cannot differ between them:
- `views`, embedded by the classifier: the system and user turns together, then each of the last
  user turns on its own. A target counts when any view reaches its threshold, so a long system
  prompt cannot dilute a question about a target out of detection, and a follow-up stays judged
  with the turn that named its subject.
- `said`: every turn, the assistant's included, scanned for the targets' names (guard.mentions):
  "Remind me, what was her surname?" after an answer that named the author is about the author.
- `last_user`: what the target's forget items are retrieved by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

ASKING = ("system", "developer", "user")
USER_TURNS_VIEWED = 3  # the last few user turns are views of their own


@dataclass(frozen=True)
class Conversation:
    turns: tuple[tuple[str, str], ...]  # (role, text), in order

    @classmethod
    def of(cls, turns: Iterable[tuple[str, str]]) -> "Conversation":
        return cls(tuple((role, text) for role, text in turns))

    @classmethod
    def of_prompt(cls, prompt: str) -> "Conversation":
        """A text completion's prompt: one user turn."""
        return cls((("user", prompt),))

    @property
    def asked(self) -> str:
        """The system and user turns, joined: what the client asked (the audit log's prompt)."""
        return "\n".join(text for role, text in self.turns if role in ASKING)

    @property
    def last_user(self) -> str:
        return next((text for role, text in reversed(self.turns) if role == "user"), "")

    @property
    def said(self) -> str:
        return "\n".join(text for _, text in self.turns)

    @property
    def views(self) -> list[str]:
        """The texts the classifier embeds, distinct, the last user turn last."""
        last = self.last_user
        users = [text for role, text in self.turns if role == "user"][-USER_TURNS_VIEWED:]
        return list(dict.fromkeys([*(v for v in [self.asked, *users] if v and v != last), last]))
