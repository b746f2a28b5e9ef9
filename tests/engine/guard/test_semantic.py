"""Semantic matching with the real bundled encoder and the bundled model's tokenizer."""

import pytest

from classifiers.encoder import load_encoder
from guard.matcher import INITIAL_STATE, Matcher
from runtime.models import guard_home
from guard.semantic import SemanticIndex
from guard.spec import GuardSpec


@pytest.fixture(scope="module")
def semantic(tokenizer):
    """In the session's GUARD_HOME (a temporary folder), where the servers keep it: the vocabulary is
    embedded once per session, by whichever comes first."""
    encoder = load_encoder()
    return SemanticIndex(tokenizer, encoder.embed, encoder.name, guard_home() / "semantic")


def token(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1
    return ids[0]


def test_a_synonym_of_a_forbidden_word_is_penalised(semantic, tokenizer):
    penalties = dict(semantic.penalties(["physicist"], strength=8.0))
    assert penalties[token(tokenizer, " scientist")] < 0


def test_spellings_are_left_to_the_token_matcher(semantic, tokenizer):
    penalties = dict(semantic.penalties(["Einstein"], strength=8.0))
    assert token(tokenizer, " relativity") in penalties  # related in meaning
    assert token(tokenizer, " Einstein") not in penalties  # the same word: blocked exactly elsewhere


def test_unrelated_words_are_untouched(semantic, tokenizer):
    penalties = dict(semantic.penalties(["physicist"], strength=8.0))
    assert token(tokenizer, " banana") not in penalties and token(tokenizer, " Paris") not in penalties


def test_the_vocabulary_embeddings_are_cached_on_disk(semantic, tokenizer):
    folder = guard_home() / "semantic"
    assert list(folder.glob("vocab-embeddings-*.npy"))
    encoder = load_encoder()
    again = SemanticIndex(tokenizer, lambda texts: pytest.fail("re-embedded"), encoder.name, folder)
    assert again.vectors.shape == semantic.vectors.shape


def test_semantic_penalties_join_the_matcher_bias_in_every_state(token_index, tokenizer):
    scientist = token(tokenizer, " scientist")
    matcher = Matcher(("einstein",), 8.0, token_index, semantic=((scientist, -3.0),))
    assert dict(zip(*matcher.bias(INITIAL_STATE)))[scientist] == -3.0
    later = matcher.replay(tokenizer.encode("The physicist was", add_special_tokens=False))
    assert dict(zip(*matcher.bias(later)))[scientist] == -3.0


def test_semantic_entries_are_validated():
    assert GuardSpec.from_extra_args(GuardSpec(("einstein",), semantic=((5, -1.5),)).to_extra_args()).semantic == ((5, -1.5),)
    with pytest.raises(ValueError, match="guard.semantic"):
        GuardSpec.from_extra_args({"guard": {"patterns": ["einstein"], "semantic": [[5, 2.0]]}})
