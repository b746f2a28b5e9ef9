"""End to end: the request fields OpenAI defines are honoured as vLLM honours them, or refused with a
400 naming them, on `guard serve` and on the proxy at every level (server.protocol.requests).

Before test_proxy_integration.py, whose last test kills the plain reference (a restart costs 30 s)."""

from __future__ import annotations

import json

import openai
import pytest

from guard.folding import fold
from tests.support.servers import MODEL, POLICY_DETECTOR, names_or_near_misses

QUESTION = [{"role": "user", "content": "What is the capital of Japan?"}]
LEVELS = ["serve", "full", "bias", "filter"]


@pytest.fixture(scope="module")
def every_server(guarded, proxies):
    return {"serve": guarded, **proxies}


FORGET = [{"role": "user", "content": "Who wrote the Harry Potter books?"}]
NAMES = [fold(p) for p in POLICY_DETECTOR.patterns]


def create(server, messages=QUESTION, **fields):
    fields = {"max_tokens": 24, "temperature": 0, **fields}
    return server.client().chat.completions.create(model=MODEL, messages=messages, **fields)


def answer(server, **fields) -> str:
    return create(server, **fields).choices[0].message.content


def streamed(server, messages, **fields) -> tuple[str, list]:
    """(text, logprobs content) of choice 0 of a streamed answer."""
    text, content = "", []
    for chunk in create(server, messages, stream=True, **fields):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            content += (chunk.choices[0].logprobs.content or []) if chunk.choices[0].logprobs else []
    return text, content


def spelled_after(context: str, alternative: str) -> list[str]:
    """The forbidden names (or their first 4+ letters) that `alternative` writes after `context`, read
    at each word start of the folded text as the guard folds it."""
    words = [m for m in range(len(context + alternative)) if m == 0 or not (context + alternative)[m - 1].isalnum()]
    found = []
    for start in words:
        tail = fold((context + alternative)[start:])
        before = fold((context + alternative)[start:len(context)]) if start < len(context) else ""
        for name in NAMES:
            written = next((k for k in range(len(name), 3, -1) if tail.startswith(name[:k])), 0)
            if written > len(before) and (written == len(name) or written == len(tail)):
                found.append(f"{tail[:written]}~{name}")
    return found


def assert_clean_alternatives(text: str, content: list) -> None:
    """No alternative beside the guarded answer writes a forbidden name or its first 4+ letters, and
    the alternatives of each rank, joined, name none either (the issue's test)."""
    assert "".join(c.token for c in content) == text
    context = ""
    for position in content:
        for alternative in position.top_logprobs:
            assert not spelled_after(context, alternative.token), (context, alternative.token)
        context += position.token
    for rank in range(max(len(p.top_logprobs) for p in content)):
        joined = "".join(p.top_logprobs[rank].token for p in content if len(p.top_logprobs) > rank)
        assert not names_or_near_misses(joined), joined


@pytest.mark.parametrize("level", LEVELS)
def test_logit_bias_and_penalties_are_honoured_as_vllm_honours_them(every_server, plain, tokenizer, level):
    """Banning the answer's first word changes the answer, exactly as on plain vLLM with the same bias."""
    unbiased = answer(plain)
    assert "Tokyo" in unbiased, unbiased
    ban = {str(tokenizer.encode(word, add_special_tokens=False)[0]): -100 for word in ("Tokyo", " Tokyo")}
    biased = answer(plain, logit_bias=ban, frequency_penalty=0.5, presence_penalty=0.3)
    assert "Tokyo" not in biased
    assert answer(every_server[level], logit_bias=ban, frequency_penalty=0.5, presence_penalty=0.3) == biased


def test_logprobs_of_an_unflagged_answer_are_plain_vllms(guarded, plain):
    """Greedy, nothing near a target: the same tokens, alternatives and log-probabilities as vLLM's
    (bf16 logits tie often: tied alternatives may come in another order, or the other one at the cut)."""
    ours, theirs = (create(server, logprobs=True, top_logprobs=5).choices[0] for server in (guarded, plain))
    assert ours.message.content == theirs.message.content
    for mine, reference in zip(ours.logprobs.content, theirs.logprobs.content, strict=True):
        assert mine.token == reference.token and mine.logprob == pytest.approx(reference.logprob, abs=1e-3)
        assert [t.logprob for t in mine.top_logprobs] == pytest.approx([t.logprob for t in reference.top_logprobs],
                                                                       abs=1e-3)
        last = reference.top_logprobs[-1].logprob
        assert ({t.token for t in mine.top_logprobs if t.logprob > last + 1e-3}
                == {t.token for t in reference.top_logprobs if t.logprob > last + 1e-3})


@pytest.mark.parametrize("level", LEVELS)
def test_logprobs_of_a_guarded_answer_spell_no_forbidden_name(every_server, level):
    """At the bias and filter levels, the upstream's own alternatives through the output filter."""
    server = every_server[level]
    whole = create(server, FORGET, logprobs=True, top_logprobs=10, max_tokens=40).choices[0]
    assert not names_or_near_misses(whole.message.content), whole.message.content
    assert all(len(p.top_logprobs) <= 10 for p in whole.logprobs.content)
    assert_clean_alternatives(whole.message.content, whole.logprobs.content)
    text, content = streamed(server, FORGET, logprobs=True, top_logprobs=10, max_tokens=40)
    assert text == whole.message.content
    assert_clean_alternatives(text, content)


def three_samples(server, stream: bool) -> list[str]:
    fields = dict(n=3, temperature=1.0, seed=11, max_tokens=40)
    if not stream:
        completion = create(server, FORGET, **fields)
        assert [c.index for c in completion.choices] == [0, 1, 2]
        return [c.message.content for c in completion.choices]
    texts = ["", "", ""]
    for chunk in create(server, FORGET, stream=True, **fields):
        texts[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    return texts


@pytest.mark.parametrize("level", LEVELS)
def test_three_choices_are_each_guarded(every_server, level):
    """Three sampled choices (seeds 11, 12, 13), each guarded, whole and streamed, and different.
    Whole and streamed are not compared sample for sample: a seed gives the same sample only in a batch
    of the same shapes (vLLM is not batch-invariant), and a fresh clone's run drew different samples
    for the same seed at the filter level, where the guard does not touch the upstream's sampling.
    Greedy whole and streamed answers are compared on `guard serve` (test_integration), and the filter's
    whole and streamed paths are held to the same scripted replies (test_proxy_adversarial_integration)."""
    for stream in (False, True):
        samples = three_samples(every_server[level], stream)
        assert all(text and not names_or_near_misses(text) for text in samples), samples
        assert len(set(samples)) > 1


def test_choices_of_an_unflagged_request_are_plain_vllms(guarded, plain):
    """Sampled with a seed, choice by choice: vLLM seeds choice i with seed + i, and so does the guard."""
    ours, theirs = (create(server, n=3, temperature=1.0, seed=5, max_tokens=16) for server in (guarded, plain))
    assert [c.message.content for c in ours.choices] == [c.message.content for c in theirs.choices]
    assert len({c.message.content for c in ours.choices}) > 1


def test_stop_strings_end_the_answer_as_vllms_do(guarded, plain):
    for stop in (["Tokyo"], [" capital", "\n"]):
        assert answer(guarded, stop=stop) == answer(plain, stop=stop)
    text, _ = streamed(guarded, QUESTION, stop=["Tokyo"])
    assert text == answer(plain, stop=["Tokyo"])


def json_format(name: str, **properties) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": {
        "type": "object", "properties": {key: {"type": kind} for key, kind in properties.items()},
        "required": list(properties)}}}


def test_json_of_an_unflagged_answer_is_plain_vllms(guarded, plain):
    for response_format in ({"type": "json_object"}, json_format("capital", city=("string"), country="string")):
        ours, theirs = (create(server, response_format=response_format, max_tokens=48).choices[0]
                        for server in (guarded, plain))
        assert (ours.message.content, ours.finish_reason) == (theirs.message.content, theirs.finish_reason)
        if ours.finish_reason == "stop":
            assert isinstance(json.loads(ours.message.content), dict)


@pytest.mark.parametrize("level", ["serve", "full"])
def test_json_about_a_target_follows_the_schema_and_leaks_nothing(every_server, level):
    """Rewinds and all: the grammar resumes with the accepted output, so the document goes on."""
    response_format = json_format("books", author="string", school="string")
    whole = create(every_server[level], FORGET, response_format=response_format, max_tokens=80).choices[0]
    text, _ = streamed(every_server[level], FORGET, response_format=response_format, max_tokens=80)
    for answer_text in (whole.message.content, text):
        assert not names_or_near_misses(answer_text), answer_text
    assert text == whole.message.content and whole.finish_reason == "stop", whole
    document = json.loads(whole.message.content)
    assert isinstance(document["author"], str) and isinstance(document["school"], str)


def test_a_schema_the_grammar_cannot_hold_is_refused(guarded):
    with pytest.raises(openai.BadRequestError) as refused:
        create(guarded, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}})
    assert refused.value.body["param"] == "response_format" and "objekt" in refused.value.body["message"]


def test_json_goes_on_after_a_rewind(guarded, tokenizer):
    """A long guarded JSON answer (on this model, rewinds near the author's name): whatever it rewound,
    the text is a document the schema's grammar accepts (checked with xgrammar directly), not one
    restarted after a rewind (what the answer is with the processor's grammar not resumed)."""
    import xgrammar

    schema = {"type": "object", "properties": {"names": {"type": "array", "items": {"type": "string"}},
                                               "answer": {"type": "string"}}, "required": ["names", "answer"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    text = answer(guarded, messages=FORGET, response_format=response_format, max_tokens=100)
    assert not names_or_near_misses(text), text
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer)))
    matcher = xgrammar.GrammarMatcher(compiler.compile_json_schema(json.dumps(schema), any_whitespace=True))
    assert all(matcher.accept_token(t) for t in tokenizer.encode(text, add_special_tokens=False)), text


def _function(name: str, **properties) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {key: {"type": "string"} for key in properties}, "required": list(properties)}}}


LOOKUP = _function("lookup_author", book="string", author="string")
WEATHER = _function("get_weather", city="string")
# A named function; one call of any (with more allowed, this small model goes on calling to the token limit).
TOOL_CHOICES = [{"tool_choice": {"type": "function", "function": {"name": "lookup_author"}}},
                {"tool_choice": "required", "parallel_tool_calls": False}]


def calls(choice) -> list[tuple[str, dict]]:
    """A choice's tool calls: (name, arguments) each, the arguments parsed (they must be JSON)."""
    return [(call.function.name, json.loads(call.function.arguments)) for call in choice.message.tool_calls or []]


def streamed_calls(server, messages, **fields) -> tuple[list[tuple[str, dict]], str | None]:
    """The tool calls of a streamed answer, put together from their deltas as a client does; its finish reason."""
    names, arguments, finish_reason = {}, {}, None
    for chunk in create(server, messages, stream=True, **fields):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            names[delta.index] = names.get(delta.index) or delta.function.name
            arguments[delta.index] = arguments.get(delta.index, "") + (delta.function.arguments or "")
        finish_reason = (chunk.choices[0].finish_reason if chunk.choices else None) or finish_reason
    return [(names[i], json.loads(arguments[i])) for i in sorted(names)], finish_reason


@pytest.mark.parametrize("choice", TOOL_CHOICES)
def test_tool_calls_of_an_unflagged_request_are_plain_vllms(guarded, plain, choice):
    """Against vLLM's JSON tool-call path: the same calls, arguments and finish reason, whole and streamed."""
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    fields = dict(tools=[WEATHER, LOOKUP], max_tokens=100, **choice)
    ours, theirs = (create(server, question, **fields).choices[0] for server in (guarded, plain))
    assert ours.finish_reason == theirs.finish_reason == _finish_reason(choice), (ours, theirs)
    assert calls(ours) == calls(theirs) and calls(ours), (ours, theirs)
    assert ours.message.tool_calls[0].function.arguments == theirs.message.tool_calls[0].function.arguments
    assert streamed_calls(guarded, question, **fields) == (calls(ours), ours.finish_reason)


def _finish_reason(choice: dict) -> str:
    return "stop" if isinstance(choice["tool_choice"], dict) else "tool_calls"  # OpenAI's: `stop` for a named one


@pytest.mark.parametrize("level", ["serve", "full"])
@pytest.mark.parametrize("choice", TOOL_CHOICES)
def test_a_tool_call_about_a_target_parses_and_leaks_nothing(every_server, plain, level, choice):
    """The guard reads the arguments as any text: plain vLLM fills a named call's `author` with the
    author's name here."""
    question = [{"role": "user", "content": "Who wrote the Harry Potter books? Use the tool."}]
    fields = dict(tools=[LOOKUP], max_tokens=80, **choice)
    if level == "serve" and _finish_reason(choice) == "stop":
        assert names_or_near_misses(json.dumps(calls(create(plain, question, **fields).choices[0])))
    whole = create(every_server[level], question, **fields).choices[0]
    assert whole.finish_reason == _finish_reason(choice), whole
    assert calls(whole) and all(name == "lookup_author" for name, _ in calls(whole))
    assert not names_or_near_misses(json.dumps(calls(whole))), calls(whole)
    assert streamed_calls(every_server[level], question, **fields) == (calls(whole), whole.finish_reason)


@pytest.mark.parametrize("level", ["bias", "filter"])
def test_the_upstreams_tool_call_passes_the_output_filter(every_server, level):
    """The upstream's own call, its arguments read as text: whole, a leak in them drops the call
    (`content_filter`); streamed, no fragment that writes a name is sent. At the filter level the
    upstream is told nothing, and its call names the author (as plain vLLM's does in the test above)."""
    question = [{"role": "user", "content": "Who wrote the Harry Potter books? Use the tool."}]
    fields = dict(tools=[LOOKUP], max_tokens=80, **TOOL_CHOICES[0])
    whole = create(every_server[level], question, **fields).choices[0]
    if level == "filter":
        assert whole.finish_reason == "content_filter" and not whole.message.tool_calls, whole
    else:
        assert whole.finish_reason == "content_filter" or calls(whole), whole
    assert not names_or_near_misses(" ".join(c.function.arguments for c in whole.message.tool_calls or []))
    arguments, finish_reason = "", None
    for chunk in create(every_server[level], question, stream=True, **fields):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            arguments += delta.function.arguments or ""
        finish_reason = (chunk.choices[0].finish_reason if chunk.choices else None) or finish_reason
    assert finish_reason == whole.finish_reason and not names_or_near_misses(arguments), arguments


AUTHOR = _function("lookup_author", author="string")


def _shown(question: str, call: dict) -> list[dict]:
    return [{"role": "user", "content": question},
            {"role": "assistant", "content": f"<tool_call>{json.dumps(call)}</tool_call>"}]


# Earlier turns that show this small model the Hermes format (its chat template never shows it the tools).
SHOWN_CALLS = (_shown("What is the weather in Rome?", {"name": "get_weather", "arguments": {"city": "Rome"}})
               + _shown("Who wrote Pride and Prejudice? Look up its author.",
                        {"name": "lookup_author", "arguments": {"author": "Jane Austen"}})
               + _shown("Who wrote The Hobbit? Look up its author.",
                        {"name": "lookup_author", "arguments": {"author": "J.R.R. Tolkien"}}))
AUTO = dict(tools=[WEATHER, AUTHOR], max_tokens=60)  # `tool_choice` left out: `auto`, the default with tools


def raw_calls(choice) -> list[tuple[str, str]]:
    """A choice's tool calls: (name, arguments as sent) each."""
    return [(call.function.name, call.function.arguments) for call in choice.message.tool_calls or []]


def streamed_answer(server, messages, **fields) -> tuple[str, list[tuple[str, str]], str | None]:
    """(content, calls as raw_calls gives them, finish reason) of a streamed answer, put together as a
    client does (a call cut by the output filter may leave arguments that do not parse)."""
    content, names, arguments, finish_reason = "", {}, {}, None
    for chunk in create(server, messages, stream=True, **fields):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            names[call.index] = names.get(call.index) or call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
        finish_reason = chunk.choices[0].finish_reason or finish_reason
    return content, [(names[i], arguments[i]) for i in sorted(names)], finish_reason


@pytest.mark.parametrize("level", ["serve", "full"])
def test_auto_tool_calls_of_an_unflagged_request_are_plain_vllms(every_server, plain, level):
    """`auto` read by vLLM's Hermes parser (--tool-call-parser hermes, as the reference runs): the model
    calls a tool in its own format, and the call, content and finish reason are vLLM's, whole and streamed."""
    question = SHOWN_CALLS + [{"role": "user", "content": "What is the weather in Paris?"}]
    ours, theirs = (create(server, question, **AUTO).choices[0] for server in (every_server[level], plain))
    assert calls(theirs) and theirs.finish_reason == "tool_calls", theirs  # the model did call a tool
    assert (ours.message.content, raw_calls(ours), ours.finish_reason) == \
        (theirs.message.content, raw_calls(theirs), theirs.finish_reason)
    assert streamed_answer(every_server[level], question, **AUTO) == (ours.message.content or "", raw_calls(ours),
                                                                     ours.finish_reason)


@pytest.mark.parametrize("level", LEVELS)
def test_an_auto_tool_call_about_a_target_leaks_nothing(every_server, plain, level):
    """Plain vLLM calls `lookup_author` with the author's name here. The guard reads the model's markup
    and arguments as any text (serve, full, bias); at the bias and filter levels the upstream's parsed
    call passes the output filter."""
    question = SHOWN_CALLS + [{"role": "user", "content": "Who wrote Harry Potter? Look up its author."}]
    if level == "serve":
        assert names_or_near_misses(json.dumps(calls(create(plain, question, **AUTO).choices[0])))
    whole = create(every_server[level], question, **AUTO).choices[0]
    assert not names_or_near_misses(f"{whole.message.content} {raw_calls(whole)}"), whole
    content, made, _ = streamed_answer(every_server[level], question, **AUTO)
    assert not names_or_near_misses(f"{content} {made}"), (content, made)
    if level in ("serve", "full"):  # (the bias and filter levels cut a stream where its leak begins)
        assert all(isinstance(json.loads(arguments), dict) for _, arguments in made), made

