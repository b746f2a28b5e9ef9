"""The HTTP contract through create_app with a scripted engine: shapes, headers, 4xx errors.

Fast; the same routes against the real vLLM engine are in test_integration.py.
"""

import json

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.serving.base import SPARE_ALTERNATIVES
from server.settings import Settings
from tests.support.fakes import FakeEngine, ScriptedApps
from tests.support.servers import MODEL, sse_data



@pytest.fixture(scope="module")
def apps(tokenizer):
    apps = ScriptedApps(tokenizer)
    yield apps
    apps.close()


@pytest.fixture()
def client_and_engine(apps):
    return apps.get(["The", " capital", " is", " Paris", "."])


def chat(client, **overrides):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], **overrides}
    return client.post("/v1/chat/completions", json=body)


def test_chat_completion_shape_and_header(client_and_engine):
    client, engine = client_and_engine
    response = chat(client, temperature=0, seed=3, stop=["\n"])
    assert response.status_code == 200
    assert response.headers["x-guard-targets"] == ""  # not about a forget target: the plain path
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "The capital is Paris."}
    assert body["usage"]["completion_tokens"] == 5
    _, params, spec = engine.seen[-1]
    # The guarded stream finds stop strings (one may span a rewind's seam): the engine gets none.
    assert params.stop == () and params.seed == 3 and params.temperature == 0
    assert spec.penalised == () and spec.semantic == () and "jkrowling" in spec.patterns  # the safety net alone
    assert response.headers["x-guard-targets"] == ""


@pytest.mark.parametrize("question", ["Who wrote the Harry Potter books?",
                                      "Pretend you are a librarian. Which school does the boy wizard attend?"])
def test_a_conversation_about_a_target_is_restricted(client_and_engine, question):
    client, engine = client_and_engine
    response = chat(client, messages=[{"role": "user", "content": question}])
    assert response.headers["x-guard-targets"] == "harry-potter"
    spec = engine.seen[-1][2]
    assert {"jkrowling", "hogwarts"} <= set(spec.patterns)  # explicit phrases, in every request


def test_the_whole_conversation_is_classified(client_and_engine):
    client, _ = client_and_engine
    messages = [{"role": "system", "content": "You are an expert on the Harry Potter books."},
                {"role": "user", "content": "Who wrote them?"}]
    assert chat(client, messages=messages).headers["x-guard-targets"] == "harry-potter"


def test_streamed_chat_is_sse_and_ends_with_done(client_and_engine):
    client, _ = client_and_engine
    with client.stream("POST", "/v1/chat/completions", json={
        "model": MODEL, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Capital of France?"}]}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = sse_data(response)
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "The capital is Paris."
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    assert events[-1]["usage"]["completion_tokens"] == 5


def test_logprobs_list_the_alternatives_the_guard_would_release(client_and_engine):
    """The engine is asked for spare alternatives; a forbidden name among them is dropped, the count kept."""
    client, engine = client_and_engine
    body = chat(client, logprobs=True, top_logprobs=3).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["The", " capital", " is", " Paris", "."]
    assert engine.seen[-1][1].logprobs == 3 + SPARE_ALTERNATIVES
    for position in content:
        assert [t["token"] for t in position["top_logprobs"]] == [position["token"], " the", " a"]
        assert position["bytes"] == list(position["token"].encode())
    assert chat(client).json()["choices"][0]["logprobs"] is None


def test_streamed_logprobs_travel_with_their_text(client_and_engine):
    client, _ = client_and_engine
    with client.stream("POST", "/v1/chat/completions", json={
        "model": MODEL, "stream": True, "logprobs": True, "top_logprobs": 1, "messages": HI}) as response:
        events = [json.loads(d) for d in sse_data(response)[:-1]]
    pieces = [(e["choices"][0]["delta"].get("content", ""), e["choices"][0]["logprobs"]) for e in events]
    for text, logprobs in pieces:
        assert "".join(c["token"] for c in (logprobs or {"content": []})["content"]) == text
    assert all(" Rowling" not in json.dumps(lp) for _, lp in pieces)


def test_text_completion_logprobs_in_the_completions_shape(client_and_engine):
    client, _ = client_and_engine
    body = client.post("/v1/completions", json={"model": MODEL, "prompt": "The", "max_tokens": 3,
                                                "logprobs": 1}).json()
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["The", " capital", " is"] and logprobs["text_offset"] == [0, 3, 11]
    assert logprobs["top_logprobs"][1] == {" capital": -0.5}  # the sampled token first, then the top ones


def test_n_choices_are_generated_and_guarded_each_on_its_own(client_and_engine):
    client, engine = client_and_engine
    body = chat(client, n=3, seed=7).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == "The capital is Paris." for c in body["choices"])
    assert sorted(params.seed for _, params, _ in engine.seen[-3:]) == [7, 8, 9]  # as vLLM seeds its choices
    assert body["usage"]["completion_tokens"] == 15
    with client.stream("POST", "/v1/chat/completions", json={
        "model": MODEL, "stream": True, "n": 2, "messages": HI, "stream_options": {"include_usage": True}}) as response:
        events = [json.loads(d) for d in sse_data(response)[:-1]]
    texts = {0: "", 1: ""}
    for event in events[:-1]:
        texts[event["choices"][0]["index"]] += event["choices"][0]["delta"].get("content") or ""
    assert texts == {0: "The capital is Paris.", 1: "The capital is Paris."}
    assert events[-1]["usage"]["completion_tokens"] == 10


def test_a_json_format_travels_in_the_spec_and_an_answer_that_is_no_json_fails_closed(client_and_engine):
    client, engine = client_and_engine
    body = chat(client, response_format={"type": "json_object"}).json()
    _, params, spec = engine.seen[-1]
    assert spec.json_schema == params.json_schema == '{"type": "object"}'  # the guard's processor keeps the grammar
    # The scripted engine ignores the grammar, as a guard that left no way on would end it: not JSON.
    assert body["choices"][0]["finish_reason"] == "content_filter"


def test_text_completion(client_and_engine):
    client, _ = client_and_engine
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "The capital", "max_tokens": 2})
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "The capital" and body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"model": MODEL}, 400, "messages"),
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, 400, "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 10**6}, 400,
         "max_completion_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "temperature"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400, "top_p"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 17}, 400, "n"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 0}, 400, "n"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, 400, "top_logprobs"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21},
         400, "top_logprobs"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "logprobs": 1}, 400, "logprobs"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}}, 400,
         "response_format.type"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stop": ["a"] * 5}, 400, "stop"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "word " * 100}]}, 400, "messages"),
        ({"model": MODEL, "messages": "hi"}, 400, "messages"),
    ],
)
def test_bad_chat_requests_get_openai_errors(client_and_engine, body, status, param):
    client, engine = client_and_engine
    calls = len(engine.seen)
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    assert len(engine.seen) == calls  # rejected before reaching the engine


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("path, field, value", [
    ("/v1/chat/completions", "logprobs", 1),  # 1 is no boolean
    ("/v1/chat/completions", "response_format", {"type": "json_schema"}),  # no schema
    ("/v1/chat/completions", "response_format", {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "objekt"}}}),  # no schema the grammar can hold
    ("/v1/chat/completions", "tool_choice", "required"),  # no tools
    ("/v1/chat/completions", "modalities", ["text", "audio"]),
    ("/v1/chat/completions", "top_k", 5),  # vLLM's, not OpenAI's
    ("/v1/completions", "logprobs", True),  # a count, not a boolean
    ("/v1/completions", "echo", True),
    ("/v1/completions", "best_of", 3),
    ("/v1/completions", "suffix", "end"),
])
def test_fields_not_honoured_are_refused_naming_them(client_and_engine, path, field, value):
    client, engine = client_and_engine
    base = {"model": MODEL, **({"messages": HI} if "chat" in path else {"prompt": "hi"})}
    response = client.post(path, json={**base, field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: ")
    assert engine.seen == []


def test_fields_that_ask_for_nothing_or_change_no_answer_are_accepted(client_and_engine):
    client, engine = client_and_engine
    response = chat(client, logprobs=False, top_logprobs=0, response_format={"type": "text"}, tools=[],
                    tool_choice="none", user="u-1", metadata={"k": "v"}, store=False)
    assert response.status_code == 200, response.text


def test_sampling_fields_reach_the_engine(client_and_engine):
    client, engine = client_and_engine
    assert chat(client, frequency_penalty=0.5, presence_penalty=-1, logit_bias={"42": -100, "7": 3}).status_code == 200
    _, params, _ = engine.seen[-1]
    assert (params.frequency_penalty, params.presence_penalty) == (0.5, -1.0)
    assert dict(params.logit_bias) == {42: -100.0, 7: 3.0}


@pytest.mark.parametrize("overrides, param", [
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"logit_bias": {"the": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias.5"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),  # beyond the vocabulary
    ({"stream_options": {"include_usage": "no"}}, "stream_options.include_usage"),
    ({"stream_options": {"include_usage": True, "colour": "red"}}, "stream_options.colour"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]},
     "messages.0.content.0"),
])
def test_sampling_fields_are_checked(client_and_engine, overrides, param):
    client, engine = client_and_engine
    response = chat(client, **overrides)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    assert engine.seen == []


@pytest.mark.parametrize("raw", ['{"model": ', "[1, 2]", "null", "not json"])
def test_malformed_bodies(client_and_engine, raw):
    client, _ = client_and_engine
    response = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "error" in response.json()


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_a_json_body_is_read_as_json_whatever_its_content_type(client_and_engine, content_type):
    """`curl -d '{...}'` (form-encoded, curl's default) and clients that send no content type."""
    client, _ = client_and_engine
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "Capital of France?"}]}' % MODEL.encode()
    response = client.post("/v1/chat/completions", content=body,
                           headers={"content-type": content_type} if content_type else {})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "The capital is Paris."
    broken = client.post("/v1/chat/completions", content=b"model=x", headers={"content-type": content_type or ""})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"


def test_empty_prompt_and_several_prompts(client_and_engine):
    client, _ = client_and_engine
    assert client.post("/v1/completions", json={"model": MODEL, "prompt": ""}).status_code == 400
    assert client.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"]}).status_code == 400


def _samples(client) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text) for sample in family.samples}


def test_models_health_metrics(client_and_engine):
    """The figures this request adds (the app is shared by the module's tests)."""
    client, _ = client_and_engine
    assert client.get("/v1/models").json()["data"][0]["id"] == MODEL
    assert client.get("/health").json()["status"] == "ok"
    before = _samples(client)
    chat(client, messages=[{"role": "user", "content": "Who wrote the Harry Potter books?"}])
    after = _samples(client)

    def added(*key):
        return after.get(key, 0.0) - before.get(key, 0.0)
    assert added("guard_restricted_requests_total", ("target", "harry-potter")) == 1
    assert added("guard_http_requests_total", ("route", "/v1/chat/completions"), ("status", "200")) == 1
    assert added("guard_classifier_seconds_count") == 1  # one classification, timed
    assert added("guard_tokens_total", ("kind", "completion")) == 5  # the fake engine's five words
    assert after[("guard_requests_in_flight",)] == 1  # this very request
    assert client.get("/nope").json()["error"]["message"] == "Not Found"


def test_unhealthy_engine_reports_503(client_and_engine):
    client, engine = client_and_engine
    engine.healthy = False
    assert client.get("/health").status_code == 503


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_classifier_fails_the_request_closed(client_and_engine, stream, monkeypatch):
    """No guard decision, no answer: a 503, and the engine never sees the prompt."""
    client, engine = client_and_engine

    def broken(conversation):
        raise RuntimeError("encoder crashed")
    monkeypatch.setattr(client.app.state.policy.restrictions, "for_conversation", broken)
    response = chat(client, stream=stream, messages=[{"role": "user", "content": "Who wrote Harry Potter?"}])
    assert response.status_code == 503 and response.json()["error"]["type"] == "server_error"
    assert engine.seen == []


def test_a_bad_policy_stops_create_app(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("targets: [{id: Bad Id, description: x}]")
    with pytest.raises(ValueError, match="targets.0.id"):
        create_app(Settings(policy=bad))


def test_policy_reload_swaps_targets_and_survives_a_broken_edit(tokenizer, tmp_path, caplog):
    import shutil
    import time

    import yaml

    from tests.conftest import UNSEEN_POLICY

    policy = tmp_path / "policy.yaml"
    shutil.copy("examples/harry-potter.yaml", policy)
    engine = FakeEngine(tokenizer, ["Fine", "."])
    app = create_app(Settings(policy=policy, reload_seconds=0.2), make_engine=lambda *_: engine)
    relativity = [{"role": "user", "content": "Who developed the theory of relativity?"}]

    def targets_when_asked(messages) -> str:
        return chat(client, messages=messages).headers["x-guard-targets"]

    def wait_until(condition, what: str) -> None:
        deadline = time.monotonic() + 90
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    with TestClient(app) as client:
        assert targets_when_asked(relativity) == ""
        policy.write_text(yaml.safe_dump(UNSEEN_POLICY))
        wait_until(lambda: targets_when_asked(relativity) == "einstein", "policy not reloaded")
        policy.write_text("targets: [{id: Not Valid}]")  # a broken edit: the previous policy stays
        wait_until(lambda: "policy file edit not applied" in caplog.text, "the broken edit was never read")
        assert targets_when_asked(relativity) == "einstein"


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("overrides, param", [
    ({"tools": [WEATHER]}, "tool_choice"),  # `auto`, the default with tools: no --tool-call-parser to read the model's
    ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice"),  # own format with
    ({"tool_choice": NAMED}, "tool_choice"),  # no tools
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
     "tool_choice.function.name"),
    ({"tools": [WEATHER, WEATHER], "tool_choice": "required"}, "tools"),  # two functions of one name
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}],
      "tool_choice": "required"}, "tools.0.function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "two words"}}], "tool_choice": "required"},
     "tools.0.function.name"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                            "function": {"name": "f"}}]}]},
     "messages.0.tool_calls.0.function.arguments"),
])
def test_tool_requests_that_cannot_be_honoured_are_refused_naming_the_field(client_and_engine, overrides, param):
    client, engine = client_and_engine
    response = chat(client, **overrides)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert engine.seen == []


@pytest.fixture()
def answering(apps):
    """A client whose engine answers with the given words."""
    return apps.get


ARGUMENTS = ['{"', 'city', '":', ' "', 'Paris', '"}']
CALLS = ['[{"name": "get_weather", ', '"parameters": {"city": "Paris"}}', ', {"name": "get_weather", ',
         '"parameters": {"city": "Rome"}}', ']']


def test_a_named_function_is_called_with_the_answer_as_its_arguments(answering):
    client, engine = answering(ARGUMENTS)
    body = chat(client, tools=[WEATHER], tool_choice=NAMED).json()
    _, params, spec = engine.seen[-1]
    assert json.loads(spec.json_schema) == WEATHER["function"]["parameters"] == json.loads(params.json_schema)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"  # OpenAI's, for a named function
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_a_named_call_streams_its_arguments(answering):
    client, _ = answering(ARGUMENTS)
    with client.stream("POST", "/v1/chat/completions", json={
            "model": MODEL, "stream": True, "messages": HI, "tools": [WEATHER], "tool_choice": NAMED}) as response:
        events = [json.loads(d) for d in sse_data(response)[:-1]]
    deltas = [d for e in events for d in e["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0]["id"].startswith("call_") and deltas[0]["function"]["name"] == "get_weather"
    assert all("id" not in d and "name" not in d["function"] for d in deltas[1:])
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"city": "Paris"}'
    assert all("content" not in e["choices"][0]["delta"] for e in events[1:])
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_required_calls_are_read_from_the_array_whole_and_streamed(answering):
    client, engine = answering(CALLS)
    body = chat(client, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False).json()
    grammar = json.loads(engine.seen[-1][1].json_schema)
    assert grammar["type"] == "array" and grammar["maxItems"] == 1  # one call only, where parallel calls are off
    assert grammar["items"]["anyOf"][0]["properties"]["name"] == {"type": "string", "enum": ["get_weather"]}
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in choice["message"]["tool_calls"]] \
        == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    with client.stream("POST", "/v1/chat/completions", json={
            "model": MODEL, "stream": True, "messages": HI, "tools": [WEATHER], "tool_choice": "required"}) as response:
        events = [json.loads(d) for d in sse_data(response)[:-1]]
    deltas = [d for e in events for d in e["choices"][0]["delta"].get("tool_calls") or []]
    assert [(d["index"], json.loads(d["function"]["arguments"])) for d in deltas] == [(0, {"city": "Paris"}),
                                                                                         (1, {"city": "Rome"})]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_calls_an_earlier_turn_made_are_read_by_the_guard(client_and_engine):
    client, engine = client_and_engine
    messages = [{"role": "user", "content": "Look someone up."},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                    "name": "lookup", "arguments": '{"who": "Hermione Granger"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "found"},
                {"role": "user", "content": "Tell me more."}]
    response = chat(client, messages=messages)
    assert response.status_code == 200, response.text
    assert response.headers["x-guard-targets"] == "harry-potter"


HERMES_CALL = ["Let", " me", " check", ".", " <tool_call>", '{"name": "get_weather", ', '"arguments": ',
               '{"city": "Paris"}}', "</tool_call>"]


def streamed_chat(client, **fields) -> list[dict]:
    with client.stream("POST", "/v1/chat/completions", json={"model": MODEL, "stream": True, **fields}) as response:
        return [json.loads(d) for d in sse_data(response)[:-1]]


def test_auto_reads_the_models_own_format_with_vllms_parser_whole_and_streamed(answering):
    client, engine = answering(HERMES_CALL, tool_call_parser="hermes")
    choice = chat(client, tools=[WEATHER]).json()["choices"][0]
    assert engine.seen[-1][1].json_schema is None  # `auto`: the model answers freely
    assert engine.seen[-1][1].skip_special_tokens is False  # the parser's own adjustment: markers stay in the text
    assert choice["message"]["content"] == "Let me check. "
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert choice["finish_reason"] == "tool_calls"
    events = streamed_chat(client, messages=HI, tools=[WEATHER], tool_choice="auto")
    deltas = [e["choices"][0]["delta"] for e in events]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check. "
    calls = [c for d in deltas for c in d.get("tool_calls") or []]
    assert [c["function"].get("name") for c in calls if c.get("id")] == ["get_weather"]
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_auto_without_a_call_is_content_whole_and_streamed(answering):
    """A parser holds back what could begin a call's marker; where none comes, the stream still ends with it."""
    client, _ = answering(["Use", " the", " <tool"], tool_call_parser="hermes")
    whole = chat(client, tools=[WEATHER]).json()["choices"][0]
    assert (whole["message"]["content"], whole["message"]["tool_calls"], whole["finish_reason"]) == \
        ("Use the <tool", [], "stop")
    events = streamed_chat(client, messages=HI, tools=[WEATHER])
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == "Use the <tool"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_auto_keeps_one_call_where_parallel_calls_are_off(answering):
    client, _ = answering([*HERMES_CALL, *HERMES_CALL[4:]], tool_call_parser="hermes")
    assert len(chat(client, tools=[WEATHER]).json()["choices"][0]["message"]["tool_calls"]) == 2
    assert len(chat(client, tools=[WEATHER], parallel_tool_calls=False).json()["choices"][0]["message"]["tool_calls"]) == 1
    events = streamed_chat(client, messages=HI, tools=[WEATHER], parallel_tool_calls=False)
    assert {c["index"] for e in events for c in e["choices"][0]["delta"].get("tool_calls") or []} == {0}


AUTHOR = {"type": "function", "function": {"name": "lookup_author", "parameters": {
    "type": "object", "properties": {"author": {"type": "string"}}}}}
LEAKING_CALL = ["<tool_call>", '{"name": "lookup_author", ', '"arguments": {"author": "J.K.', " Rowling", '"}}',
                "</tool_call>"]


def test_an_auto_call_is_guarded_as_any_text(answering):
    """The model's markup and arguments are text the guard reads: a forbidden name in them never goes out."""
    client, _ = answering(LEAKING_CALL, tool_call_parser="hermes")
    asked = [{"role": "user", "content": "Who wrote the Harry Potter books?"}]
    whole = chat(client, messages=asked, tools=[AUTHOR]).json()["choices"][0]
    assert "Rowling" not in json.dumps(whole) and whole["finish_reason"] == "content_filter"
    events = streamed_chat(client, messages=asked, tools=[AUTHOR])
    assert "Rowling" not in json.dumps(events) and events[-1]["choices"][0]["finish_reason"] == "content_filter"


@pytest.fixture()
def limited(apps):
    return apps.get(["Fine", "."], max_request_bytes=4096)


def _body(text: str) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}]}).encode()


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(limited):
    client, engine = limited
    for content in (_body("x" * 5000), iter([_body("x" * 3000), b" " * 3000])):  # declared, and chunked
        response = client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "request_too_large"
    assert engine.seen == []
    chunked = client.post("/v1/chat/completions", content=iter([_body("hi")[:20], _body("hi")[20:]]),
                          headers={"content-type": "application/json"})
    assert chunked.status_code == 200 and chunked.json()["choices"][0]["message"]["content"] == "Fine."
