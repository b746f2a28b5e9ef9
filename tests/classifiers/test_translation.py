"""Conversations in other languages, put into English by the real Apertium pipelines for the real
classifier: questions the English-only encoder misses in French are flagged once translated, and their
neighbours in French are not."""

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
def languages():
    return translator(ALL)


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
    monkeypatch.setattr(translation, "TIMEOUT_S", 0.2)
    with pytest.raises(translation.TranslationError, match="no translation within"):  # the request fails closed...
        pipeline.translate("Bonjour.")
    assert pipeline._process is None  # ... the stalled pipeline is gone, and the next text gets a new one
    pipeline.command = command
    assert pipeline.translate("El gato.") == "The cat."
    pipeline.close()


def test_unknown_and_missing_languages_stop_at_start_up(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="translate\n.*no translation into English for de"):
        GuardOptions(translate="fr,de")
    monkeypatch.setattr(translation, "MODES", tmp_path)
    with pytest.raises(ValueError, match=r"Apertium's fr-es, spa-eng not installed; run `make setup`"):
        check_languages(("fr",))
    (tmp_path / "xx-yy.mode").write_text("lt-proc a.bin | no-such-apertium-step -z b.bin | lt-proc -g c.bin")
    monkeypatch.setitem(translation.LANGUAGES, "xx", ("xx-yy",))
    with pytest.raises(ValueError, match="Apertium's no-such-apertium-step not installed"):  # a program a pair needs
        check_languages(("xx",))
    check_languages(())  # no language: nothing needed
    assert GuardOptions(translate="").translate == ""


@pytest.mark.parametrize("question, flagged", [
    ("Qui a écrit Le Seigneur des anneaux ?", ("lord-of-the-rings",)),
    ("Qui est le magicien dans Le Seigneur des anneaux ?", ("lord-of-the-rings",)),
    ("Qui a développé la théorie de la relativité ?", ("einstein",)),
    ("¿Quién desarrolló la teoría de la relatividad?", ("einstein",)),
    ("Qui a découvert la pénicilline ?", ()),  # neighbours, in French, stay unflagged
    ("Qui a écrit Le Monde de Narnia ?", ()),
    ("Quelle est la capitale de l'Allemagne ?", ()),
])
def test_the_classifier_reads_the_translation(unseen_classifier, languages, question, flagged):
    policy = parse_policy(UNSEEN_POLICY)
    conversation = Conversation.of_prompt(question)
    assert tuple(Restrictions(policy, 8.0, unseen_classifier, translate=languages.views).detect(conversation)) == flagged
    if flagged and "magicien" not in question:  # (what the English-only encoder misses alone)
        assert Restrictions(policy, 8.0, unseen_classifier).detect(conversation) == {}


def test_one_translator_per_process_and_language_set():
    assert translator(ALL) is translator(ALL) and isinstance(translator(ALL), Translator)
