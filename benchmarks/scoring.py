"""Teacher-forced answer likelihoods: the mean token NLL of given answers to given questions.

Under a plain model this is the usual `-mean log p(y_t | q, y_<t)` over the answer's tokens. Under
the guard (DESIGN.md: "compute it under the guarded distribution") the guard's per-step bias is
applied at every answer position, exactly as the logits processor would apply it while the answer
is being generated, so a blocked token has probability ~0 and a penalised one less than before.
"""

from __future__ import annotations

from typing import Sequence

import torch

from guard.matcher import INITIAL_STATE, Matcher
from unlearning.data import Item, collate, encode
from unlearning.losses import IGNORE

MAX_TOKEN_NLL = 30.0  # a blocked token counts as probability e^-30, so an answer's mean stays finite
MAX_LENGTH = 512


def guard_answer_logits(
    logits: torch.Tensor,  # [A, V] float: the logits that predict each answer token, modified in place
    answer_ids: Sequence[int],  # [A] the answer's tokens, fed to the guard one by one
    matcher: Matcher,
) -> torch.Tensor:
    """The guarded logits along a teacher-forced answer: before token t, the bias for the state
    reached after tokens < t (the logits processor's per-step write, replayed)."""
    state = INITIAL_STATE
    for t, token_id in enumerate(answer_ids):
        bias = matcher.bias(state)
        if bias.token_ids:
            logits[t, list(bias.token_ids)] += torch.tensor(bias.values, dtype=logits.dtype)
        state = matcher.advance(state, int(token_id))
    return logits


def answer_mean_nll(logits: torch.Tensor, answer_ids: torch.Tensor) -> float:
    """Mean NLL of `answer_ids` [A] under `logits` [A, V], each token's NLL capped at MAX_TOKEN_NLL."""
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, answer_ids.unsqueeze(-1)).squeeze(-1)
    return float((-log_probs).clamp(max=MAX_TOKEN_NLL).mean())


@torch.no_grad()
def mean_nlls(
    model, tokenizer, pairs: Sequence[tuple[str, str]], matchers: Sequence[Matcher | None] | None = None,
    batch_size: int = 8,
) -> list[float]:
    """Mean token NLL of each (question, answer), the question in the chat template; with
    `matchers[i]`, under the guard restricting pair i (None: unguarded)."""
    matchers = matchers if matchers is not None else [None] * len(pairs)
    if len(matchers) != len(pairs):
        raise ValueError(f"{len(matchers)} matchers for {len(pairs)} pairs")
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = collate([encode(tokenizer, Item(q, a, chat=True), MAX_LENGTH) for q, a in chunk], pad)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits.float().cpu()
        for row, matcher in enumerate(matchers[start:start + batch_size]):
            targets = batch["labels"][row, 1:]
            answer = targets != IGNORE
            row_logits, answer_ids = logits[row, :-1][answer].clone(), targets[answer]
            if matcher is not None:
                guard_answer_logits(row_logits, answer_ids.tolist(), matcher)
            results.append(answer_mean_nll(row_logits, answer_ids))
    return results
