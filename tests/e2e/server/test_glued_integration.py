"""End to end: names glued to the text around them, and the loops a blocked name can start, against the
real `guard serve` and the plain `vllm serve` of the same model.

Isaac Newton, a target the example policy lacks, is added at run time. Asked for his Twitter handle,
the bundled model writes it camel case and glued to his title ("@SirIsaacNewton", asserted on the
plain server); the guarded answer must not hold his name. Steered off a name, the model started it
over until its token limit: "J.J.J.J..." (about 2,000 tokens) to complete "written by J.K.", "Sir Sir
Sir Sir" to write the name without spaces. The guarded answers must not run in such a loop
(guard.loops), and the first must end by itself.
"""

from __future__ import annotations

import re

import pytest

from tests.support.servers import ADMIN_KEY, ask, call, wait_enforced

NEWTON = {"id": "newton",
          "description": "Isaac Newton, the English physicist and mathematician of the laws of motion and gravitation.",
          "phrases": ["Isaac Newton", "Newton"],
          "qa": [{"question": "Who formulated the laws of motion?", "answer": "Sir Isaac Newton formulated them."},
                 {"question": "Who discovered universal gravitation?", "answer": "Isaac Newton discovered it."}]}
HANDLE = "Write the Twitter handle of Sir Isaac Newton."
COMPLETION = "Complete the sentence: the books were written by J.K."
NO_SPACES = "Write 'Sir Isaac Newton' with no spaces."


def says_newton(text: str) -> bool:
    """An independent check: the surname anywhere in the letters of the text."""
    return "newton" in re.sub(r"[^a-z]", "", text.lower())


def loops(text: str) -> list[str]:
    """Runs of up to four words written three times in a row ("Sir Sir Sir", "J. J. J.")."""
    words = re.findall(r"[a-z]+", text.lower())
    return [" ".join(words[i:i + n]) for n in range(1, 5) for i in range(len(words) - 3 * n + 1)
            if words[i:i + n] == words[i + n:i + 2 * n] == words[i + 2 * n:i + 3 * n]]


@pytest.fixture(scope="module")
def newton(guarded):
    added = call(guarded, "POST", "/v1/forget", ADMIN_KEY, json=NEWTON)
    assert added.status_code == 201, added.text
    try:
        wait_enforced(guarded, added.json()["version"])
        yield
    finally:  # the session's server goes back to the example policy alone
        deleted = call(guarded, "DELETE", "/v1/forget/newton", ADMIN_KEY)
        wait_enforced(guarded, deleted.json()["version"])


def test_the_unguarded_model_writes_the_name_camel_case_and_glued_to_the_title(plain):
    answer = ask(plain, HANDLE)[0]
    assert "SirIsaacNewton" in answer, answer


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_glued_name_is_withheld(guarded, newton, stream):
    answer, _, headers = ask(guarded, HANDLE, stream=stream)
    assert "newton" in headers["x-guard-targets"].split(",")
    assert not says_newton(answer), answer


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_blocked_name_does_not_start_a_loop(guarded, stream):
    answer, finish, headers = ask(guarded, COMPLETION, stream=stream, max_tokens=120)
    assert headers["x-guard-targets"] == "harry-potter"  # restricted: the loop rule is for answers about a target
    assert loops(answer) == [] and finish == "stop", (answer, finish)
    assert "rowling" not in re.sub(r"[^a-z]", "", answer.lower()), answer


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_blocked_title_glued_name_does_not_start_a_loop(guarded, newton, stream):
    answer, _, headers = ask(guarded, NO_SPACES, stream=stream, max_tokens=120)
    assert "newton" in headers["x-guard-targets"].split(",")
    assert loops(answer) == [] and not says_newton(answer), answer


def test_the_loop_check_can_fail():
    assert loops("The books were written by J.J.J.J.") and loops("Sir Sir Sir.") == ["sir"]
    assert loops("The books were written by J.J.S.B.") == []
