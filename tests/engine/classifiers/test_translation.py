"""Conversations in other languages, put into English by the real Apertium pipelines and German
dictionary for the real classifier: questions the English-only encoder misses in French or German are
flagged once translated, and their neighbours in those languages are not."""

import os

import pytest
from pydantic import ValidationError

from classifiers import translation
from classifiers.translation import Translator, check_languages, translator
from guard.conversation import Conversation
from guard.policy import parse_policy
from guard.restriction import Restrictions
from runtime.restrictions import GuardOptions
from tests.conftest import UNSEEN_POLICY

ALL = tuple(translation.LANGUAGES)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("translation")


@pytest.fixture(scope="module")
def languages(cache_dir):
    return translator(ALL, cache_dir)


@pytest.mark.parametrize("text", [
    "Qui a écrit Le Seigneur des anneaux ?",  # French, through Spanish
    "¿Quién escribió El Señor de los Anillos?",
    "Chi ha scritto Il Signore degli Anelli?",  # Italian, through Spanish
    "Quem escreveu O Senhor dos Anéis?",  # Portuguese, through Spanish
    "Qui va escriure El Senyor dels Anells?",  # Catalan
])
def test_each_language_is_put_into_english(languages, text):
    english = languages.english(text).lower()
    assert "rings" in english and ("wrote" in english or "written" in english), english


def test_german_is_glossed_word_for_word(languages, cache_dir):
    assert languages.english("Wer hat die Relativitätstheorie entwickelt?") == "who has the theory of relativity developed?"
    assert languages.english('Antworte nur mit JSON {"Autor": "..."}: Wer hat den Herrn der Ringe geschrieben?') \
        == 'responses only with JSON {"writer": "..."}: who has the master the rings written?'  # endings, punctuation
    assert len(list(cache_dir.glob("freedict-deu-eng-*.json"))) == 1  # built once, then read from the cache
    again = translation.Glossary("freedict-deu-eng", *translation.GLOSSARIES["freedict-deu-eng"], cache_dir)
    assert again.translate("Wo wurde er geboren?") == "where was he born?"


def test_english_is_left_alone(languages):
    assert languages.english("Who wrote The Lord of the Rings?") is None
    assert languages.views(["Who wrote it?"]) == ["Who wrote it?"]


def test_the_stream_format_characters_and_nul_come_through(languages):
    english = languages.english('Réponds en JSON {"auteur": "..."} : qui a écrit [x] a/b $5 @moi #3+4*2 <b> ?\0 Merci.')
    for kept in ('{"author": "..."}', "[x]", "$5", "#3+4*2", "<b>"):
        assert kept in english, english
    assert languages.english("Qui a découvert la pénicilline ?") == "That has discovered the pénicilline ?"


def test_views_keep_the_last_user_turn_last_in_english(languages):
    views = languages.views(["Tu es un assistant.\nQui est le magicien ?", "Qui est le magicien ?"])
    assert views[0] == "Tu es un assistant.\nQui est le magicien ?" and views[2] == "Qui est le magicien ?"
    assert len(views) == 4 and views[3] == languages.english("Qui est le magicien ?") != views[2]


def test_a_pipeline_that_dies_or_stalls_is_started_afresh(monkeypatch):
    pipeline = translation.Pipeline("spa-eng")
    assert pipeline.translate("El gato.") == "The cat."
    os.killpg(pipeline._process.pid, 9)
    pipeline._process.wait()
    assert pipeline.translate("El perro.") == "The dog."  # found dead before a text: started again
    command, pipeline.command = pipeline.command, "cat > /dev/null"  # one that never answers
    pipeline.close()
    with monkeypatch.context() as patched, pytest.raises(translation.TranslationError, match="no translation within"):
        patched.setattr(translation, "TIMEOUT_S", 0.2)
        pipeline.translate("Bonjour.")  # the request fails closed...
    assert pipeline._process is None  # ... the stalled pipeline is gone, and the next text gets a new one
    pipeline.command = command
    assert pipeline.translate("El gato.") == "The cat."
    pipeline.close()


def test_unknown_and_missing_languages_stop_at_start_up(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="translate\n.*no translation into English for nl"):
        GuardOptions(translate="fr,nl")
    monkeypatch.setattr(translation, "MODES", tmp_path)
    with pytest.raises(ValueError, match=r"fr-es, spa-eng not installed; run `make setup`"):
        check_languages(("fr",))
    (tmp_path / "xx-yy.mode").write_text("lt-proc a.bin | no-such-apertium-step -z b.bin | lt-proc -g c.bin")
    monkeypatch.setitem(translation.LANGUAGES, "xx", ("xx-yy",))
    with pytest.raises(ValueError, match="no-such-apertium-step not installed"):  # a program a pair needs
        check_languages(("xx",))
    monkeypatch.setattr(translation, "DICTIONARIES", tmp_path)
    with pytest.raises(ValueError, match="freedict-deu-eng not installed"):
        check_languages(("de",))
    check_languages(())  # no language: nothing needed
    assert GuardOptions(translate="").translate == ""


@pytest.mark.parametrize("question, flagged, missed_in_english", [
    ("Qui a écrit Le Seigneur des anneaux ?", ("lord-of-the-rings",), True),
    ("Qui est le magicien dans Le Seigneur des anneaux ?", ("lord-of-the-rings",), False),
    ("Qui a développé la théorie de la relativité ?", ("einstein",), True),
    ("¿Quién desarrolló la teoría de la relatividad?", ("einstein",), True),
    ("Wer hat die Relativitätstheorie entwickelt?", ("einstein",), True),
    ("Wer ist der Zauberer in Der Herr der Ringe?", ("lord-of-the-rings",), False),
    ("Qui a découvert la pénicilline ?", (), False),  # neighbours, in French and German, stay unflagged
    ("Wer hat Die Chroniken von Narnia geschrieben?", (), False),
    ("Qui a écrit Le Monde de Narnia ?", (), False),
    ("Quelle est la capitale de l'Allemagne ?", (), False),
])
def test_the_classifier_reads_the_translation(unseen_classifier, languages, question, flagged, missed_in_english):
    policy = parse_policy(UNSEEN_POLICY)
    conversation = Conversation.of_prompt(question)
    assert tuple(Restrictions(policy, 8.0, unseen_classifier, translate=languages.views).detect(conversation)) == flagged
    if missed_in_english:  # what the English-only encoder misses alone
        assert Restrictions(policy, 8.0, unseen_classifier).detect(conversation) == {}


def test_one_translator_per_process_and_language_set(languages):
    assert translator(("fr",)) is translator(("fr",)) and isinstance(translator(("fr",)), Translator)
