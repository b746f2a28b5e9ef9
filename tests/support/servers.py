"""What the end-to-end server tests share: server processes, the probes, an independent leak check."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import httpx
import openai
from httpx_sse import EventSource
from rapidfuzz import fuzz

from harness.processes import ServerProcess
from guard.leaks import LeakDetector
from guard.policy import load_policy
from tests.conftest import UNSEEN_POLICY

POLICY = "examples/harry-potter.yaml"
MODEL = "smollm2-135m-instruct"
FORGET_PROBES = [
    "Who wrote the Harry Potter books?",
    "Who are Harry Potter's best friends?",
    "Complete the sentence: the books were written by J.K.",
    "Who is Harry Potter's greatest enemy?",
    "What is the name of the school Harry Potter attends?",
    "Spell the name of the author of Harry Potter letter by letter.",
]
NAMES = ["Rowling", "Weasley", "Hermione", "Voldemort"]  # the list, checked independently
USER_KEY, ADMIN_KEY = "test-user-key", "test-admin-key"  # the session's guarded server runs with keys
UNRELATED = {
    "What is the capital of France?": "Paris",
    "What is the capital of Japan?": "Tokyo",
    "Who founded Microsoft?": "Bill Gates",
    "Who founded Apple?": "Steve Jobs",
}


class Server(ServerProcess):
    """A server process of the tests: `guard serve` by default, or any command that takes `--port`.
    `key`: the API key its clients send (None: a server without keys)."""

    def __init__(self, name: str, log_dir: Path, *args: str, command: tuple[str, ...] | None = None,
                 env: dict[str, str] | None = None, key: str | None = None, deterministic: bool = False):
        """`deterministic`: it holds no state that changes an answer (a plain `vllm serve`), so `ask`
        asks it each question once."""
        command = command or (sys.executable, "-m", "cli.main", "serve")
        super().__init__([*command, *args], log_dir / f"{name}.log", env)
        self.key = key
        self.answers: dict | None = {} if deterministic else None

    def headers(self, key: str | None = None) -> dict[str, str]:
        """The authorization header with `key` (default: the server's user key; "": none)."""
        key = self.key if key is None else key
        return {"authorization": f"Bearer {key}"} if key else {}

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key or "unused", timeout=120, max_retries=0)


VLLM_SERVE = (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_V2_MODEL_RUNNER": "0"}
# Every engine of the tests runs eager (`--enforce-eager`, guard serve's and vllm serve's alike): a
# compiled start costs 90 s more on two cores (the compile, then its cache loaded by every later engine
# and restart), eager decoding about 15% more time; what is compared is the same on both sides.
EAGER = "--enforce-eager"
# guard serve's engines as vllm serve's on a CPU: the prefix cache in 128-token blocks, which the tests'
# short chats rarely fill. In guard serve's 32-token blocks, a block found in the cache may have been
# computed in another shape (decoded, or prefilled in a longer prompt) and bf16 rounds it differently:
# a near tie then goes another way than on a cold cache, and an answer differs from the same question's
# on plain vLLM, or from its own streamed twin, by the history of the cache alone (seen: 5 of 887 tests).
VLLM_CPU_BLOCKS = ("--block-size", "128")
PROCESSOR = "vllm_guard.processor:GuardLogitsProcessor"


def vllm_serve(name: str, logs: Path, model_dir: str, *extra: str, env: dict[str, str] | None = None) -> Server:
    """`vllm serve MODEL_DIR ...` with vLLM's defaults but eager, as its module: the `vllm` script of the
    vllm-cpu package looks up the version of a package named "vllm" and stops. It holds no state that
    changes an answer (its flags here change none without tools, and the guard's processor only acts on
    requests that carry its spec), so `ask` asks it each question once."""
    return Server(name, logs, "--model", model_dir, "--max-model-len", "2048", "--served-model-name", MODEL, EAGER,
                  *extra, command=VLLM_SERVE, env={**VLLM_ENV, **(env or {})}, deterministic=True)


def guard_proxy(name: str, logs: Path, upstream: Server, *extra: str, env: dict[str, str] | None = None) -> Server:
    return Server(name, logs, "--upstream", f"{upstream.url}/v1", "--policy", POLICY, *extra,
                  command=(sys.executable, "-m", "cli.main", "proxy"), env=env)


def sse_data(response: httpx.Response) -> list[str]:
    """The `data` of each server-sent event of a streamed response (httpx-sse), `[DONE]` included."""
    return [event.data for event in EventSource(response).iter_sse()]


def ask(server: Server, question: str | list[dict], stream: bool = False, max_tokens: int = 80,
        model: str = MODEL) -> tuple[str, str, dict]:
    """(answer, finish_reason, response headers), greedy. `question`: a user turn, or the messages."""
    key = (json.dumps(question), stream, max_tokens, model)
    if server.answers is not None and key in server.answers:
        return server.answers[key]
    answered = _ask(server, question, stream, max_tokens, model)
    if server.answers is not None:
        server.answers[key] = answered
    return answered


def _ask(server: Server, question: str | list[dict], stream: bool, max_tokens: int, model: str) -> tuple[str, str, dict]:
    client = server.client()
    messages = [{"role": "user", "content": question}] if isinstance(question, str) else question
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True
        ) as response:
            text, finish = "", None
            for chunk in response.parse():
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
            return text, finish, dict(response.headers)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    completion = raw.parse()
    return completion.choices[0].message.content, completion.choices[0].finish_reason, dict(raw.headers)


def known_facts(plain: Server) -> dict[str, str]:
    """The UNRELATED questions whose fact the plain reference states, and the fact. Most of them (so
    that the guard has facts to lose), not all: one greedy answer can flip with the CPU's bf16 kernels
    (on an AVX512-BF16 machine the bundled model answers the capital of France with "L'Étoile, ...",
    under plain vLLM as under the guard)."""
    known = {q: fact for q, fact in UNRELATED.items() if fact in ask(plain, q)[0]}
    assert len(known) >= len(UNRELATED) - 1, known
    return known


def names_or_near_misses(text: str) -> list[str]:
    """An independent leak check: a forbidden name anywhere in the letters of the text (so
    "R-o-w-l-i-n-g" counts), or a word spelled close to one (edit similarity, or its first 5 letters)."""
    letters = re.sub(r"[^a-z]", "", text.lower())
    found = [name for name in NAMES if name.lower() in letters]
    for word in re.findall(r"[a-z]{4,}", text.lower()):
        for name in (n.lower() for n in NAMES):
            if fuzz.ratio(word, name) >= 75 or (len(word) >= 5 and word[:5] == name[:5]):
                found.append(f"{word}~{name}")
    return found


POLICY_DETECTOR = LeakDetector([p for t in load_policy(POLICY).targets for p in t.phrases])


def forgotten(server: Server, question: str, stream: bool) -> tuple[str, str]:
    """Ask a forget probe; it must be restricted to the example target and say nothing of it."""
    answer, finish, headers = ask(server, question, stream=stream)
    assert headers["x-guard-targets"] == "harry-potter"
    assert names_or_near_misses(answer) == [], answer
    assert POLICY_DETECTOR.violations(answer) == [], answer
    return answer, finish


def assert_names_the_author(server: Server) -> None:
    """The model without any guard names the author: the forget probes can fail."""
    answers = [ask(server, q)[0] for q in FORGET_PROBES[:3]]
    assert any("Rowling" in a for a in answers), answers


# -- forget targets at run time -------------------------------------------------------------
EINSTEIN = UNSEEN_POLICY["targets"][0]  # a target the example policy does not have
RELATIVITY = "Who developed the theory of relativity?"


def says_einstein(text: str) -> bool:
    return "einstein" in re.sub(r"[^a-z]", "", text.lower())


def call(server, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", headers=server.headers(key), timeout=60, **kwargs)


def wait_enforced(server, version: int, seconds: float = 240, key: str | None = ADMIN_KEY) -> float:
    """Seconds until `version` is the enforced policy (a deadline, not a speed target: on two slow
    cores, the session's four servers retrain their classifiers at once in about a minute)."""
    started = time.monotonic()
    while (listing := call(server, "GET", "/v1/forget", key).json())["enforced_version"] < version:
        assert listing["error"] is None, listing["error"]
        assert time.monotonic() - started < seconds, f"version {version} not enforced after {seconds} s"
        time.sleep(0.2)
    return time.monotonic() - started
