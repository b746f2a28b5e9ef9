"""Teacher-forced answer likelihoods: the mean token NLL of given answers to given questions.

Under a plain model this is the usual `-mean log p(y_t | q, y_<t)` over the answer's tokens. Under
the guard (docs/benchmarks.md#metrics: computed under the guarded distribution) the guard's per-step bias is
applied at every answer position, exactly as the logits processor would apply it while the answer
is being generated, so a blocked token has probability ~0 and a penalised one less than before.
"""

from __future__ import annotations

from typing import Sequence

import torch

from guard.matcher import INITIAL_STATE, Matcher
from unlearning.data import Item, encode
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
def answer_nlls(model, tokenizer, question: str, answers: Sequence[str], matcher: Matcher | None = None) -> list[float]:
    """Mean token NLL of each of `answers` to `question` (in the chat template, each answer ending with
    the end-of-turn token, as `unlearning.data.encode` makes them); with `matcher`, under the guard.

    The question's prompt runs once; its key/value cache is shared by all the answers, which run as
    one batch on top of it (most of each sequence is the prompt, so this is several times cheaper)."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode(tokenizer, Item(question, text, chat=True), MAX_LENGTH) for text in answers]
    prompt_length = sum(label == IGNORE for label in encoded[0].labels)  # short answers: the same for all
    prompt = torch.tensor([encoded[0].input_ids[:prompt_length]], device=device)
    first = model(input_ids=prompt, use_cache=True)
    cache = first.past_key_values
    cache.batch_repeat_interleave(len(answers))
    answer_ids = [e.input_ids[prompt_length:] for e in encoded]
    width = max(len(ids) for ids in answer_ids)
    ids = torch.full((len(answers), width), pad, dtype=torch.long)
    mask = torch.zeros((len(answers), prompt_length + width), dtype=torch.long)
    mask[:, :prompt_length] = 1
    for row, row_ids in enumerate(answer_ids):
        ids[row, :len(row_ids)] = torch.tensor(row_ids)
        mask[row, prompt_length:prompt_length + len(row_ids)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache).logits
    logits = logits.float().cpu()
    first_logits = first.logits[0, -1].float().cpu()  # predicts every answer's first token
    results = []
    for row, row_ids in enumerate(answer_ids):
        row_logits = torch.cat([first_logits[None], logits[row, :len(row_ids) - 1]])
        if matcher is not None:
            guard_answer_logits(row_logits, row_ids, matcher)
        results.append(answer_mean_nll(row_logits, torch.tensor(row_ids)))
    return results
