"""A scripted engine for the fast tests: the server.engine.Engine protocol, words instead of a model."""

from __future__ import annotations

from server.engine import Delta, EngineStats, PositionLogprobs, TokenLogprob

# The alternatives the fake lists beside each word (its logprobs): one a forbidden name.
ALTERNATIVES = (" Rowling", " the", " a", " of", " in", " and", " to", " is")


class FakeEngine:
    """Answers every request with `words`, one token each (token id = position), up to max_tokens."""

    max_model_len = 64

    def __init__(self, tokenizer, words):
        self.tokenizer, self.words, self.healthy, self.seen, self.loras = tokenizer, words, False, [], []

    async def start(self):
        self.healthy = True

    async def shutdown(self):
        self.healthy = False

    async def health(self):
        return None if self.healthy else "the fake engine is down"

    def stats(self):
        return EngineStats(running=0, waiting=0)

    async def stream(self, prompt_ids, params, spec, request_id, lora=None):
        self.seen.append((prompt_ids, params, spec))
        self.loras.append(lora)
        for i, word in enumerate(self.words[: params.max_tokens]):
            last = i == len(self.words) - 1 or i == params.max_tokens - 1
            logprobs = None
            if params.logprobs is not None:
                top = (word, *(a for a in ALTERNATIVES if a != word))[:params.logprobs]
                logprobs = (PositionLogprobs(TokenLogprob(word, -0.5), tuple(
                    TokenLogprob(text, -0.5 - rank) for rank, text in enumerate(top))),)
            yield Delta([i], word, ("stop" if i == len(self.words) - 1 else "length") if last else None, logprobs)
