"""The token-level matcher: which next tokens would complete or approach a forbidden pattern.

A row's state is what of its output text matters for matching: the partial matches under way
(folded prefixes of patterns, each begun at a word start) and whether the next letter starts a
word. For a state the matcher yields a bias over token ids: -inf for every token that would
complete a pattern, and an adaptive penalty, growing with the depth a token would reach, for
every token that would begin or extend a *penalised* one (the safety net on conversations the
classifier did not flag penalises nothing: it only blocks). A penalised pattern is blocked from its
doomed depth on (guard.name_words.doomed_depth: "Hogw", "J.K"), where the strict rules would judge any
continuation a near-miss: steered off before it, rather than rewound after. A name glued into
another word (guard.name_words.embedded_words: "LandhielZephaquist") is tracked from anywhere inside a
word, and only its completion is blocked: "propagand" must stay free to become "propaganda" whatever
"Gandalf" begins with. States repeat (most
rows sit in the empty state most of the time), so both the transition and the bias are cached per
state: a decode step costs dict lookups, never a pass over the vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

from guard.loops import MAX_UNIT, looping_start, overused_words
from guard.name_words import doomed_depth
from guard.vocab import TokenIndex

BLOCK = float("-inf")
_CACHE_LIMIT = 200_000


class MatchState(NamedTuple):
    active: tuple[str, ...]  # partial matches under way, as folded pattern prefixes, sorted
    at_boundary: bool  # the last character was a separator (or nothing was written yet)
    inside: tuple[str, ...] = ()  # partial matches of embedded words in the word being written, sorted


INITIAL_STATE = MatchState((), True)


class Bias(NamedTuple):
    token_ids: tuple[int, ...]
    values: tuple[float, ...]  # BLOCK or a negative penalty, one per token id


class Matcher:
    def __init__(self, patterns: tuple[str, ...], penalty: float, index: TokenIndex,
                 semantic: tuple[tuple[int, float], ...] = (), penalised: tuple[str, ...] | None = None,
                 leading_words: tuple[str, ...] = (), embedded: tuple[str, ...] = ()):
        """`penalised`: the patterns steered away from by depth (None: all), and blocked from their
        doomed depth (`leading_words`: guard.name_words.leading_words); the others are only blocked.
        `embedded`: folded words whose completion is blocked anywhere inside a word."""
        self.patterns = patterns
        self.penalised = frozenset(patterns if penalised is None else penalised) if penalty else frozenset()
        self._doomed = {p: depth for p in self.penalised if (depth := doomed_depth(p, leading_words)) is not None}
        self.penalty = penalty
        self.index = index
        self.semantic = dict(semantic)  # token id -> penalty, in every state (guard.semantic)
        self._extending: dict[str, list[str]] = {}  # proper prefix -> patterns extending it
        for pattern in patterns:
            for k in range(1, len(pattern)):
                self._extending.setdefault(pattern[:k], []).append(pattern)
        self._inside: dict[str, list[str]] = {}  # proper prefix -> embedded words extending it
        for word in embedded:
            for k in range(1, len(word)):
                self._inside.setdefault(word[:k], []).append(word)
        self._holding = frozenset(t for word in embedded for t in index.holding(word))
        self._transitions: dict[tuple[MatchState, int], MatchState] = {}
        self._biases: dict[MatchState, Bias] = {}
        self._static = self._start_bias(boundary=False)
        self._static_at_boundary = self._start_bias(boundary=True)

    @classmethod
    def for_spec(cls, spec, index: TokenIndex) -> "Matcher":
        """The matcher a guard.spec.GuardSpec asks for."""
        return cls(spec.patterns, spec.penalty, index, spec.semantic, spec.penalised, spec.leading_words,
                   spec.embedded)

    # -- state transitions ---------------------------------------------------------------
    def advance(self, state: MatchState, token_id: int) -> MatchState:
        key = (state, token_id)
        cached = self._transitions.get(key)
        if cached is None:
            if len(self._transitions) > _CACHE_LIMIT:
                self._transitions.clear()
            cached = self._transitions[key] = self._advance(state, token_id)
        return cached

    def _advance(self, state: MatchState, token_id: int) -> MatchState:
        if token_id >= len(self.index):
            return MatchState((), True)
        piece = self.index.pieces[token_id]
        if not piece.folded:  # pure separator: partial matches carry on across it, a word's insides end
            return MatchState(state.active, True)
        active = {a + piece.folded for a in state.active if a + piece.folded in self._extending}
        starts = set(piece.word_starts)
        if state.at_boundary:
            starts.add(0)
        active.update(piece.folded[j:] for j in starts if piece.folded[j:] in self._extending)
        return MatchState(tuple(sorted(active)), piece.ends_with_separator, self._inside_after(state, piece))

    def _inside_after(self, state: MatchState, piece) -> tuple[str, ...]:
        """The embedded words' partial matches open at the end of the word `piece` leaves unfinished."""
        if not self._inside or piece.ends_with_separator:
            return ()
        last_word = max(piece.word_starts, default=0)
        inside = set()
        if last_word == 0 and not piece.leads_with_separator and not state.at_boundary:
            inside = {a + piece.folded for a in state.inside if a + piece.folded in self._inside}
        inside.update(piece.folded[j:] for j in range(last_word, len(piece.folded)) if piece.folded[j:] in self._inside)
        return tuple(sorted(inside))

    def loop_bans(self, recent_ids, at_boundary: bool) -> list[int]:
        """The tokens that would take a restricted answer ending in `recent_ids` further into a loop
        (guard.loops); none for an answer about no target (nothing penalised). `at_boundary`: the next
        letter starts a word."""
        if not self.penalised:
            return []
        pieces = [self.index.pieces[t] for t in recent_ids[-3 * MAX_UNIT:] if 0 <= t < len(self.index)]
        start = looping_start([p.folded for p in pieces])
        banned = set(self.index.whole.equal(start)) if start else set()
        for word in overused_words(pieces):
            completing, beginning = self.index.pattern_starts(word, at_boundary)
            banned |= completing | beginning.keys()
        return sorted(banned)

    def replay(self, token_ids, state: MatchState = INITIAL_STATE) -> MatchState:
        for token_id in token_ids:
            state = self.advance(state, token_id)
        return state

    # -- the bias for the next token -----------------------------------------------------
    def bias(self, state: MatchState) -> Bias:
        cached = self._biases.get(state)
        if cached is None:
            if len(self._biases) > _CACHE_LIMIT:
                self._biases.clear()
            cached = self._biases[state] = self._bias(state)
        return cached

    def _bias(self, state: MatchState) -> Bias:
        blocked, depth = self._static_at_boundary if state.at_boundary else self._static
        blocked, depth = set(blocked), dict(depth)
        whole = self.index.whole
        for done in state.active:
            for pattern in self._extending[done]:
                rest = pattern[len(done) :]
                if pattern not in self.penalised:
                    blocked.update(whole.with_prefix(rest))
                    continue
                doomed = max(self._doomed.get(pattern, len(pattern)) - len(done), 1)
                blocked.update(whole.with_prefix(rest[:doomed]))
                for k in range(1, doomed):
                    _deepen(depth, whole.equal(rest[:k]), (len(done) + k) / len(pattern))
        for done in state.inside:
            for word in self._inside[done]:
                blocked.update(self.index.bare.with_prefix(word[len(done):]))
        return self._to_bias(blocked, depth)

    def _start_bias(self, boundary: bool) -> tuple[set[int], dict[int, float]]:
        """Tokens that begin a pattern at a word start, whatever the partial matches."""
        blocked: set[int] = set(self._holding)
        depth: dict[int, float] = {}
        for pattern in self.patterns:
            doomed = self._doomed.get(pattern)
            pattern_blocked, pattern_depth = self.index.pattern_starts(pattern[:doomed or None], boundary)
            blocked |= pattern_blocked
            if pattern not in self.penalised:
                continue
            for token_id, fraction in pattern_depth.items():
                fraction *= (doomed or len(pattern)) / len(pattern)  # of the pattern, not of its doomed prefix
                if depth.get(token_id, 0.0) < fraction:
                    depth[token_id] = fraction
        return blocked, depth

    def _to_bias(self, blocked: set[int], depth: dict[int, float]) -> Bias:
        penalised = sorted(t for t in depth.keys() | self.semantic.keys() if t not in blocked)  # depth > 0 only
        token_ids = tuple(sorted(blocked)) + tuple(penalised)
        values = (BLOCK,) * len(blocked) + tuple(
            min(self.penalty_for(depth.get(t, 0.0)), self.semantic.get(t, 0.0)) for t in penalised
        )
        return Bias(token_ids, values)

    def penalty_for(self, fraction: float) -> float:
        """Adaptive penalty, -penalty * fraction²: gentle on a first letter or two (" He" is common),
        steep near the end."""
        return -self.penalty * fraction * fraction


def _deepen(depth: dict[int, float], token_ids: list[int], fraction: float) -> None:
    for token_id in token_ids:
        if depth.get(token_id, 0.0) < fraction:
            depth[token_id] = fraction
