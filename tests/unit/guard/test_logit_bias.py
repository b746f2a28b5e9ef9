"""The guard's word-start bias as an OpenAI logit_bias map, on the bundled tokenizer."""

from guard.logit_bias import LOGIT_BIAS_MIN, LogitBiases
from guard.spec import GuardSpec, compile_patterns


def test_entry_tokens_of_the_spans_are_biased_within_the_api_limits(tokenizer):
    spec = GuardSpec(compile_patterns(["J.K. Rowling", "Hogwarts"]), 8.0)
    bias = LogitBiases(tokenizer, max_entries=300).for_spec(spec)
    assert 0 < len(bias) <= 300
    assert all(isinstance(k, str) and LOGIT_BIAS_MIN <= v < 0 for k, v in bias.items())
    hog = tokenizer.encode(" Hogwarts", add_special_tokens=False)[0]  # the entry token of the span
    assert bias[str(hog)] < 0
    paris = tokenizer.encode(" Paris", add_special_tokens=False)[0]
    assert str(paris) not in bias


def test_the_cap_keeps_the_strongest_and_strongest_means_minus_100(tokenizer):
    spec = GuardSpec(compile_patterns(["J.K. Rowling", "Hogwarts", "Hermione Granger", "Voldemort"]), 8.0)
    biases = LogitBiases(tokenizer, max_entries=5)
    full, capped = LogitBiases(tokenizer, max_entries=10_000).for_spec(spec), biases.for_spec(spec)
    assert len(capped) == 5 and sorted(capped.values()) == sorted(full.values())[:5]
    assert set(biases.for_spec(spec, strongest=True).values()) == {LOGIT_BIAS_MIN}
