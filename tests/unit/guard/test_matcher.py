"""The token-level matcher on the bundled model's real tokenizer."""

import pytest

from guard.name_words import NEAR_MISS_DEPTH, embedded_words, leading_words
from guard.matcher import BLOCK, INITIAL_STATE, Matcher
from guard.spec import compile_patterns
from tests.conftest import HP_PHRASES


@pytest.fixture(scope="module")
def matcher(token_index):
    return Matcher(compile_patterns(HP_PHRASES), 8.0, token_index)


def first_blocked(matcher, tokenizer, context: str, text: str):
    """Walk `context + text` token by token; the index (within text's tokens) of the first token the
    matcher blocks, or None. Also returns the penalties met on the way."""
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    ids = tokenizer.encode(context + text, add_special_tokens=False)
    assert ids[: len(context_ids)] == context_ids
    state = matcher.replay(ids[: len(context_ids)])
    penalties = []
    for step, token_id in enumerate(ids[len(context_ids) :]):
        bias = dict(zip(*matcher.bias(state)))
        if bias.get(token_id) == BLOCK:
            return step, penalties
        penalties.append(bias.get(token_id, 0.0))
        state = matcher.advance(state, token_id)
    return None, penalties


@pytest.mark.parametrize(
    "text",
    [
        " J.K. Rowling", " JK Rowling", " J. K. Rowling", " j.k. rowling", " J.K. ROWLING", " Rowling's",
        " rowling", " ROWLING", " R-o-w-l-i-n-g", " R O W L I N G", "\nRowling", " (Rowling)",
        " Ron Weasley", " the Weasleys", " Hermione", " HERMIONE", " Voldemort", " Lord Voldemort's",
        " Hogwarts", " hogwarts",
    ],
)
def test_every_tokenisation_variant_is_blocked(matcher, tokenizer, text):
    step, _ = first_blocked(matcher, tokenizer, "The answer is", text)
    assert step is not None, f"{text!r} was never blocked"


@pytest.mark.parametrize("text", [" Paris", " Bill Gates", " iron ore", " herbs", " a row of houses", " Ronaldo"])
def test_unrelated_text_is_never_blocked(matcher, tokenizer, text):
    step, _ = first_blocked(matcher, tokenizer, "The answer is", text)
    assert step is None


def test_phrases_start_only_at_word_starts(matcher, tokenizer):
    # "Hermione" inside a longer word is no match ...
    assert first_blocked(matcher, tokenizer, "The answer is", " superhermione")[0] is None
    # ... but it is right after punctuation
    assert first_blocked(matcher, tokenizer, "The answer is", " (Hermione)")[0] is not None


def test_penalty_grows_along_a_partial_match_until_it_is_doomed(matcher, tokenizer):
    """Penalised: steered harder at each letter, then blocked where the strict rules would call any
    continuation a near-miss (NEAR_MISS_DEPTH letters), not only where the name would complete."""
    state, penalties = matcher.replay(tokenizer.encode("His enemy", add_special_tokens=False)), []
    for token_id in tokenizer.encode(" Voldemort", add_special_tokens=False):
        penalty = dict(zip(*matcher.bias(state))).get(token_id, 0.0)
        following = matcher.advance(state, token_id)
        reached = max(map(len, following.active), default=0)
        if reached >= NEAR_MISS_DEPTH or not following.active:
            assert penalty == BLOCK
            break
        penalties.append(penalty)
        state = following
    assert penalties and 0 > penalties[0] and penalties == sorted(penalties, reverse=True)  # each step steers harder
    assert max(map(len, state.active)) < NEAR_MISS_DEPTH


def test_a_leading_word_is_doomed_at_once(token_index, tokenizer):
    strict = Matcher(compile_patterns(HP_PHRASES), 8.0, token_index, leading_words=tuple(leading_words(HP_PHRASES)))
    assert first_blocked(strict, tokenizer, "The actor is", " Ron Howard")[0] == 0  # "Ron" of "Ron Weasley"
    step, _ = first_blocked(strict, tokenizer, "The actor is", " J.K. Simmons")  # "J.K" of "J.K. Rowling"
    assert step is not None and tokenizer.decode(tokenizer.encode(" J.K. Simmons", add_special_tokens=False)[:step + 1]) \
        .replace(" ", "").startswith("J.K")
    assert first_blocked(strict, tokenizer, "The answer is", " a row of houses")[0] is None


def test_partial_match_spans_steps_and_separators(token_index, tokenizer):
    matcher = Matcher(compile_patterns(HP_PHRASES), 8.0, token_index, penalised=())  # blocked at the end only
    state = matcher.replay(tokenizer.encode("by J.K.", add_special_tokens=False))
    assert "jk" in state.active and state.at_boundary
    blocked = {t for t, v in zip(*matcher.bias(state)) if v == BLOCK}
    assert tokenizer.encode(" Rowling", add_special_tokens=False)[0] not in blocked  # " Row" alone only extends
    state = matcher.advance(state, tokenizer.encode(" Row", add_special_tokens=False)[0])
    blocked = {t for t, v in zip(*matcher.bias(state)) if v == BLOCK}
    assert tokenizer.encode("ling", add_special_tokens=False)[0] in blocked


def test_multiple_targets_are_all_enforced(token_index, tokenizer):
    matcher = Matcher(compile_patterns(["Rowling", "Albert Einstein", "Narnia"]), 8.0, token_index)
    for text in (" Rowling", " Albert Einstein", " Narnia"):
        assert first_blocked(matcher, tokenizer, "It is", text)[0] is not None


def test_states_and_biases_are_cached(matcher, tokenizer):
    token_id = tokenizer.encode(" Row", add_special_tokens=False)[0]
    assert matcher.advance(INITIAL_STATE, token_id) is matcher.advance(INITIAL_STATE, token_id)
    assert matcher.bias(INITIAL_STATE) is matcher.bias(INITIAL_STATE)


def test_patterns_outside_the_penalised_ones_are_blocked_never_penalised(token_index, tokenizer):
    """The safety net's spec: a phrase cannot complete, but nothing steers away from its beginning."""
    patterns = compile_patterns(HP_PHRASES)
    net = Matcher(patterns, 8.0, token_index, penalised=())
    bias = dict(zip(*net.bias(INITIAL_STATE)))
    assert set(bias.values()) <= {BLOCK}  # no penalty anywhere
    step, penalties = first_blocked(net, tokenizer, "The author is", " J.K. Rowling")
    assert step is not None and set(penalties) == {0.0}
    mixed = Matcher(patterns, 8.0, token_index, penalised=("voldemort",))
    _, hermione = first_blocked(mixed, tokenizer, "Her friend", " Hermione")
    _, voldemort = first_blocked(mixed, tokenizer, "His enemy", " Voldemort")
    assert set(hermione) == {0.0} and min(voldemort) < 0


def test_a_name_glued_into_another_word_is_blocked_only_where_it_completes(token_index, tokenizer):
    phrases = ["Listhiel Zephaquist", "Gandalf", "J.K. Rowling", "Hermione Granger"]
    embedded = embedded_words(phrases)
    glued = Matcher(compile_patterns(phrases), 8.0, token_index, embedded=embedded)
    for text in [" LandhielZephaquist", " superhermione", " #TeamGandalf", " XanjowithZephaquist's"]:
        assert first_blocked(glued, tokenizer, "The answer is", text)[0] is not None, text
    # What begins as a name inside a word is free to become another word: no penalty, no block.
    for text in [" propaganda", " growling", " prowling dogs", " Zeph aquist"]:
        step, penalties = first_blocked(glued, tokenizer, "The answer is", text)
        assert step is None and not any(penalties), text
