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


class ScriptedApps:
    """Apps of the example policy over a scripted engine, started once per settings (starting one
    compiles the policy, about a second) and shared by the tests of a module; each `get` resets the
    engine to a healthy one that answers `words` and has seen nothing."""

    def __init__(self, tokenizer, policy: str = "examples/harry-potter.yaml"):
        self.tokenizer, self.policy, self._started = tokenizer, policy, {}

    def get(self, words, **settings):
        from fastapi.testclient import TestClient

        from server.app import create_app
        from server.settings import Settings

        key = repr(sorted(settings.items()))
        if key not in self._started:
            engine = FakeEngine(self.tokenizer, words)
            client = TestClient(create_app(Settings(policy=self.policy, **settings), make_engine=lambda *_: engine))
            self._started[key] = (client.__enter__(), engine)
        client, engine = self._started[key]
        engine.words, engine.healthy = list(words), True
        engine.seen.clear()
        engine.loras.clear()
        return client, engine

    def close(self) -> None:
        for client, _ in self._started.values():
            client.__exit__(None, None, None)
