"""The README's and the docs' marked examples (```` ```bash example ````), run as printed against the
session's real servers, so that no example can silently stop being true (docs/development.md).

Each page's examples run in its order, in bash with `set -euo pipefail`, `localhost:8000` (`make
serve`'s server) pointing at the session's guarded server and `localhost:8080` (the proxy page's) at its
full proxy. `curl` fails on an HTTP error (`--fail-with-body`); the session's server has keys, so a
request that sends none is sent with the user key, and `ADMIN_KEY` is its admin key. What a page says
an example answers is written under it as checks, in an HTML comment the rendered page hides:

    <!-- checks:
    targets: harry-potter       the x-guard-targets header of every completion ("none": empty)
    names: none                 no answer names Rowling, Weasley, Hermione or Voldemort, nor a near miss
    answer: as plain vLLM       every answer is, word for word, plain vLLM's to the same request
    contains: TEXT              the output holds TEXT
    -->

The leak check is the tests' own, independent of the guard's matcher (tests/support/servers.py).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import ADMIN_KEY, call, names_or_near_misses, wait_enforced

ROOT = Path(__file__).parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = re.compile(r"^```bash example\n(?P<code>.*?)^```\n(?:\s*<!-- checks:\n(?P<checks>.*?)-->)?", re.M | re.S)
CHECK = re.compile(r"^(?P<name>targets|names|answer|contains): (?P<value>.+?)\s*$")
CURL = r'''curl() {
  local auth=()
  [[ " $* " == *"Authorization:"* ]] || auth=(-H "Authorization: Bearer $EXAMPLE_KEY")
  command curl --fail-with-body --max-time 120 "${auth[@]}" "$@"
}
'''


def examples(page: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """(code, [(check, value)]) of each marked example of the page, in order."""
    found = []
    for match in EXAMPLE.finditer(page.read_text()):
        lines = [line.strip() for line in (match["checks"] or "").splitlines() if line.strip()]
        checks = [(m["name"], m["value"]) for m in map(CHECK.match, lines) if m]
        assert len(checks) == len(lines), f"{page.name}: a check this test does not know in {lines}"
        found.append((match["code"], checks))
    return found


def run(code: str, ports: dict[str, str], key: str) -> str:
    for port, url in ports.items():
        code = code.replace(f"localhost:{port}", url.removeprefix("http://"))
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + CURL + code], capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "EXAMPLE_KEY": key, "ADMIN_KEY": ADMIN_KEY})
    assert done.returncode == 0, f"exit {done.returncode}:\n{code}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def completions(output: str) -> list[tuple[str, list[str]]]:
    """(x-guard-targets, the choices' texts) of each completion in the output (`curl -i` or not)."""
    found, decoder, position = [], json.JSONDecoder(), 0
    headers = [(m.start(), m[1].strip()) for m in re.finditer(r"^x-guard-targets:(.*)$", output, re.I | re.M)]
    while (start := output.find("{", position)) != -1:
        try:
            value, position = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if isinstance(value, dict) and str(value.get("object", "")).endswith("completion"):
            texts = [c.get("message", {}).get("content") or c.get("text") or "" for c in value["choices"]]
            targets = [value for at, value in headers if at < start]  # its response's header, if shown
            found.append((targets[-1] if targets else None, texts))
    return found


def check(name: str, value: str, output: str, plain_output: str | None) -> None:
    answered = completions(output)
    if name == "contains":
        assert value in output, output
        return
    assert answered, f"{name}: no completion in the output:\n{output}"
    for targets, texts in answered:
        if name == "targets":
            assert targets == ("" if value == "none" else value), (targets, output)
        elif name == "names":
            assert value == "none" and all(names_or_near_misses(text) == [] for text in texts), texts
        else:
            assert value == "as plain vLLM", value
            assert [texts for _, texts in answered] == [texts for _, texts in completions(plain_output)]


@pytest.mark.parametrize("page", [p for p in PAGES if examples(p)], ids=lambda p: p.name)
def test_the_pages_examples_hold(page, guarded, plain, proxies):
    ports = {"8000": guarded.url, "8080": proxies["full"].url}
    for code, checks in examples(page):
        assert checks, f"{page.name}: an example without checks: what does it answer?\n{code}"
        output = run(code, ports, guarded.key)
        plain_output = run(code, {"8000": plain.url}, "unused") if ("answer", "as plain vLLM") in checks else None
        for name, value in checks:
            check(name, value, output, plain_output)
    # what the page's examples changed (forget targets added and deleted) in force before the next test
    wait_enforced(guarded, call(guarded, "GET", "/v1/forget", ADMIN_KEY).json()["version"])


def test_the_example_reader_reads_what_the_pages_hold():
    """It finds examples in the pages, and a failed check is a failure."""
    assert sum(len(examples(p)) for p in PAGES) >= 8
    output = 'x-guard-targets: harry-potter\r\n\r\n{"object": "chat.completion", "choices": [{"message": {"content": "J.K. Rowling"}}]}'
    assert completions(output) == [("harry-potter", ["J.K. Rowling"])]
    with pytest.raises(AssertionError):
        check("names", "none", output, None)
    with pytest.raises(AssertionError):
        check("targets", "none", output, None)
