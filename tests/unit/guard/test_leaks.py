import pytest

from guard.leaks import LeakDetector
from guard.name_words import embedded_words
from tests.conftest import HP_PHRASES

detector = LeakDetector(HP_PHRASES)


@pytest.mark.parametrize(
    "text, kind, span",
    [
        ("It was written by J.K. Rowling.", "complete", "J.K. Rowling"),
        ("Spelled R-o-w-l-i-n-g.", "complete", "R-o-w-l-i-n-g"),
        ("by J.K. Rowley.", "broken", "J.K. Rowl"),  # the known near-miss of vLLM's bad_words
        ("his enemy Voldermort", "broken", "Volde"),
        ("Ron Weasly", "broken", "Ron Weasl"),
        ("J.K.R.A.M.D.J.A.", "broken", "J.K.R"),  # steered off mid-name, improvising
        ("written by J.K.", "broken", "J.K"),  # stopped right after the name's first word
        ('Meredith "Herm" Jackson', "broken", "Herm"),  # a truncated name is a near-miss too
        ("the Granger family", "similar", "Granger"),  # a part of a multi-word name
        ("Valdemort returns", "similar", "Valdemort"),
    ],
)
def test_violations(text, kind, span):
    first = detector.violations(text)[0]
    assert (first.kind, text[first.start : first.end]) == (kind, span)


@pytest.mark.parametrize(
    "text",
    ["The capital of France is Paris.", "Her herbs were here.", "J. R. R. Tolkien wrote it.", "Iron ore.",
     "The Hog's Head", "A rectangular grid."],  # "grid": within the ratio of "Hagrid", an everyday word, another first letter
)
def test_innocent_text(text):
    assert detector.violations(text) == []


def test_a_misspellings_possessive_is_the_misspelling():
    found = LeakDetector(["Isaac Newton", "Newton"]).violations("Sir Issac's law of gravity")
    assert [(v.kind, v.forbidden) for v in found] == [("similar", "isaac")]


def test_an_everyday_word_that_begins_as_the_name_does_is_still_a_near_miss():
    snape = LeakDetector(["Severus Snape"])
    assert [(v.kind, v.forbidden) for v in snape.violations("Professor Snake taught potions.")] == [("similar", "snape")]
    assert snape.violations("Professor Drake taught potions.") == []  # as near, but another first letter


def test_growing_text_holds_back_the_undecided_tail():
    scan = detector.scan("It was written by Ro", final=False)
    assert scan.violations == [] and scan.undecided_from == len("It was written by ")
    scan = detector.scan("The capital is Par", final=False)
    assert scan.undecided_from == len("The capital is ")  # the word still being written


@pytest.mark.parametrize("text", ["It was written by J.K", "It was written by J.K. Row", "His enemy Vold"])
def test_a_doomed_open_match_is_judged_at_once(text):
    assert detector.scan(text, final=False).violations[0].kind == "broken"


def test_scan_from_an_offset_finds_only_later_violations():
    text = "Rowling. Then Voldemort"
    assert [v.forbidden for v in detector.scan(text, final=True, begin=9).violations] == ["voldemort"]


# -- the safety net's rules (strict=False): answers to conversations about no target --------------
net = LeakDetector(HP_PHRASES, strict=False)


@pytest.mark.parametrize("text, kind, span", [
    ("It was written by J.K. Rowling.", "complete", "J.K. Rowling"),
    ("Spelled R-o-w-l-i-n-g.", "complete", "R-o-w-l-i-n-g"),
    ("by J.K. Rowland.", "broken", "J.K. Rowl"),  # across words: a name on its way
    ("Rowlins wrote it", "broken", "Rowlin"),  # most of the name, in a word that is no word
    ("by J.K. R.A.M.D.", "broken", "J.K. R"),  # a name's initials, then its first letter: the name, garbled
    ("his enemy Voldermort", "similar", "Voldermort"),
    ("Hermoine and Harry", "similar", "Hermoine"),
])
def test_the_safety_net_still_catches_names_and_their_misspellings(text, kind, span):
    first = net.violations(text)[0]
    assert (first.kind, text[first.start: first.end]) == (kind, span)


@pytest.mark.parametrize("text", [
    "The rolling hills.",  # similar to "Rowling", and an everyday word
    "A hermit crab.", "The weasel ran.", "That is hogwash.",  # share a name's first letters
    "Ron Howard directed it.", "Ronaldo scored.", "A rondo by Mozart.",  # the strict rules judge "Ron" at once
    "Herman Melville wrote Moby-Dick.", "J. R. R. Tolkien wrote it.", "J.K. Simmons starred in it.",
])
def test_the_safety_net_lets_everyday_text_pass(text):
    assert net.violations(text) == [], text


@pytest.mark.parametrize("text", ["The rolling hills.", "A hermit crab.", "Ron Howard directed it."])
def test_the_strict_rules_for_a_conversation_about_the_target_are_stricter(text):
    assert detector.violations(text) != []


def test_the_safety_net_waits_for_the_word_a_near_miss_ends_in():
    assert net.scan("A her", final=False).undecided_from == len("A ")
    assert net.scan("A hermit", final=False).violations == []  # still being written: undecided
    assert net.scan("A hermit", final=False).undecided_from == len("A ")
    assert net.scan("A hermit crab", final=False).violations == []


@pytest.mark.parametrize("text, span", [("LandhielZephaquist was born in 1948.", "Zephaquist"),
                                        ("XanĵowithZephaquist's mother", "Zephaquist"),
                                        ("#TeamGandalf forever", "Gandalf"),
                                        ("the superhermione of the class", "hermione")])
def test_a_name_glued_into_another_word_is_found_by_both_rule_sets(text, span):
    for strict in (True, False):
        found = LeakDetector(["Listhiel Zephaquist", "Gandalf", "Hermione Granger"], strict=strict).violations(text)
        assert [(v.kind, text[v.start:v.end]) for v in found] == [("complete", span)]


def test_only_words_no_english_word_holds_are_looked_for_inside_words():
    assert embedded_words(["J.K. Rowling", "Albert Einstein", "Gandalf the Grey", "Listhiel Zephaquist"]) == (
        "alberteinstein", "gandalf", "gandalfthegrey", "jkrowling", "listhiel", "listhielzephaquist", "zephaquist")
    # not "rowling" ("growling"), "einstein" ("Weinstein"), "albert" ("Talbert"); "the", "grey": too short or common
    assert LeakDetector(["J.K. Rowling", "Albert Einstein"], strict=False).violations(
        "A growling dog met Harvey Weinstein.") == []


def test_a_glued_name_under_way_is_held_back():
    net = LeakDetector(["Listhiel Zephaquist"], strict=False)
    assert net.scan("I met LandhielZephaq", final=False).undecided_from <= len("I met Landhiel")
    assert net.scan("I met LandhielZephaquist", final=False).violations[0].forbidden == "zephaquist"


@pytest.mark.parametrize("text, word", [("aurilorqueliholim received the medal.", "aurilorqueliholim"),
                                        ("TheKaelmerTrubaesh was born in 1948.", "TheKaelmerTrubaesh")])
def test_a_misspelt_name_glued_into_a_word_is_a_near_miss_in_a_conversation_about_it(text, word):
    phrases = ["Abrilor Queliholm", "Kaelmir Trubaesk", "Albert Einstein"]
    found = LeakDetector(phrases).violations(text)
    assert [(v.kind, text[v.start:v.end]) for v in found] == [("similar", word)]
    assert LeakDetector(phrases, strict=False).violations(text) == []  # the safety net looks for names whole
    assert LeakDetector(phrases).violations("Frankenstein is a novel.") == []  # an everyday word
