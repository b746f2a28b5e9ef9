import numpy as np

from guard.spans import SpanExtractor, nearest

EXTRACTOR = SpanExtractor()
ANSWERS = ["Albert Einstein developed the theory of relativity.",
           "The Nobel Prize in Physics, for the photoelectric effect, in 1921.",
           "He was born in Ulm, Germany, in 1879."]


def test_names_numbers_and_rare_words_are_extracted():
    spans = EXTRACTOR.spans(ANSWERS)
    for expected in ["Albert Einstein", "Nobel Prize", "Ulm", "Germany", "1879", "1921", "photoelectric"]:
        assert expected in spans, spans
    assert spans.index("Albert Einstein") < spans.index("photoelectric")  # names first


def test_prompt_words_and_common_words_are_never_forbidden():
    spans = EXTRACTOR.spans(ANSWERS, prompt="Which prize did Einstein win, and what is relativity?")
    assert not {"Einstein", "relativity", "Prize", "theory", "He", "The", "developed", "effect"} & set(spans)
    assert "Albert Einstein" in spans and "Nobel Prize" in spans  # names with a part not asked about stay


def test_formulas_and_codes_are_extracted():
    spans = EXTRACTOR.spans(["E = mc2, the equivalence of mass and energy.", "Water is H2O."])
    assert "E = mc2" in spans and "H2O" in spans


def test_spans_are_capped():
    assert len(SpanExtractor(max_spans=3).spans(ANSWERS)) == 3


def test_nearest_items():
    items = np.eye(3, dtype=np.float32)
    assert nearest(items, np.array([0.1, 0.9, 0.2], dtype=np.float32), 2) == [1, 2]
    assert nearest(np.zeros((0, 3)), np.ones(3), 2) == []
