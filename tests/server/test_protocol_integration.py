"""End to end: the request fields OpenAI defines are honoured as vLLM honours them, or refused with a
400 naming them, on `guard serve` and on the proxy at every level (server.protocol).

Before test_proxy_integration.py, whose last test kills the plain reference (a restart costs 30 s)."""

from __future__ import annotations

import openai
import pytest

from tests.server.servers import MODEL

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of Japan?"}]
LEVELS = ["serve", "full", "bias", "filter"]


@pytest.fixture(scope="module")
def every_server(guarded, proxies):
    return {"serve": guarded, **proxies}


def answer(server, **fields) -> str:
    completion = server.client().chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24,
                                                          temperature=0, **fields)
    return completion.choices[0].message.content


@pytest.mark.parametrize("level", LEVELS)
def test_fields_the_guard_cannot_honour_are_refused(every_server, level):
    client = every_server[level].client()
    for field, value in [("logprobs", True), ("response_format", {"type": "json_object"}),
                         ("tools", [{"type": "function", "function": {"name": "capital", "parameters": {}}}])]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, **{field: value})
        assert refused.value.body["param"] == field, refused.value.body


@pytest.mark.parametrize("level", LEVELS)
def test_logit_bias_and_penalties_are_honoured_as_vllm_honours_them(every_server, plain, tokenizer, level):
    """Banning the answer's first word changes the answer, exactly as on plain vLLM with the same bias."""
    unbiased = answer(plain)
    assert "Tokyo" in unbiased, unbiased
    ban = {str(tokenizer.encode(word, add_special_tokens=False)[0]): -100 for word in ("Tokyo", " Tokyo")}
    biased = answer(plain, logit_bias=ban, frequency_penalty=0.5, presence_penalty=0.3)
    assert "Tokyo" not in biased
    assert answer(every_server[level], logit_bias=ban, frequency_penalty=0.5, presence_penalty=0.3) == biased
