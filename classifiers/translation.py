"""Conversations in other languages, put into English for the prompt classifier.

The classifier's sentence encoder knows English only, and no multilingual encoder ships its weights on
PyPI. So a view of a conversation (guard.conversation) that py3langid reads as one of `LANGUAGES` is
also put into English by Apertium, a rule-based machine translation system from Debian's packages
(`make setup` installs them), and the classifier judges both: "Qui a écrit Le Seigneur des
anneaux ?" becomes "That has written The Gentleman of the rings ?", which the classifier flags where
the French alone reaches nothing. Where Debian has no direct pair into English, the text goes
through Spanish. Apertium has no German pair at all: German is glossed word for word from FreeDict's
German-English dictionary (`Glossary`).

Each language pair's pipeline is one long-lived chain of Apertium's programs in null-flush mode: a
text in, its translation out, in 2-4 ms. It starts when its language is first seen (about 100 ms
once), so a server pays its memory (40-100 MB a pair, most of it dictionaries; the pair into English
is shared) only for the languages it is asked in. A pipeline that fails or stalls is killed and raises
`TranslationError` (the request fails closed), and is started afresh for the next text.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from functools import lru_cache
from pathlib import Path

from guard.files import cache_key, file_sha256, write_atomically

MODES = Path("/usr/share/apertium/modes")
DICTIONARIES = Path("/usr/share/dictd")
# Into English: Apertium's modes (.mode files in MODES), through Spanish where Debian has no direct
# pair; or, where Apertium has none at all, a word-for-word gloss from a FreeDict dictionary.
LANGUAGES: dict[str, tuple[str, ...]] = {
    "fr": ("fr-es", "spa-eng"),
    "es": ("spa-eng",),
    "it": ("ita-spa", "spa-eng"),
    "pt": ("pt-es", "spa-eng"),
    "ca": ("cat-eng",),
    "de": ("freedict-deu-eng",),
}
# Debian's packages for them, as the Makefile's TRANSLATION installs them:
PACKAGES = ("apertium cg3 apertium-fr-es apertium-eng-spa apertium-spa-ita apertium-es-pt apertium-eng-cat "
            "dict-freedict-deu-eng")
MAX_CHARS = 2000  # the encoder reads 256 word pieces of a view; a longer view is translated up to this
TIMEOUT_S = 10.0
_SPECIAL = re.compile(r"([\\\[\]{}^$/@<>*#+])")  # Apertium's stream format escapes these
_ESCAPED = re.compile(r"\\(.)", re.S)


class TranslationError(RuntimeError):
    pass


def check_languages(languages: tuple[str, ...]) -> None:
    """Raise ValueError, naming what is missing, unless every language can be translated here."""
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise ValueError(f"no translation into English for {', '.join(unknown)} "
                         f"(known: {', '.join(LANGUAGES)})")
    steps = list(dict.fromkeys(step for lang in languages for step in LANGUAGES[lang]))
    missing = [d for d in steps if _glossary(d) and not _glossary_files(d)[0].is_file()]
    modes = [m for m in steps if not _glossary(m)]
    missing += [m for m in modes if not (MODES / f"{m}.mode").is_file()]
    missing += sorted({program for m in modes if m not in missing for program in _programs(m)
                       if shutil.which(program) is None})
    if missing:
        raise ValueError(f"{', '.join(missing)} not installed; run `make setup` (apt-get install "
                         f"{PACKAGES}), or pass --translate '' to judge only English")


def _glossary(step: str) -> bool:
    return step in GLOSSARIES


def _glossary_files(name: str) -> tuple[Path, Path]:
    return DICTIONARIES / f"{name}.index", DICTIONARIES / f"{name}.dict.dz"


def _stages(mode: str) -> list[str]:
    return [stage.strip() for stage in (MODES / f"{mode}.mode").read_text().strip().split("|")]


def _programs(mode: str) -> set[str]:
    return {stage.split()[0] for stage in _stages(mode)}


class Pipeline:
    """One Apertium mode's programs (one language pair, one way), chained, running for as long as the
    process does."""

    def __init__(self, mode: str):
        stages = _stages(mode)
        # -z: flush at each NUL; $1: no marks on unknown words; $2: the tagger's default.
        self.command = " | ".join(re.sub(r"^(\S+)", r"\1 -z", s).replace("$1", "-n").replace("$2", "")
                                  for s in stages)
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def translate(self, text: str) -> str:
        with self._lock:
            try:
                return self._translate(text)
            except Exception as exc:
                self.close()
                raise TranslationError(f"translation failed: {exc}") from exc

    def _translate(self, text: str) -> str:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(["bash", "-c", self.command], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        # A newline, or a last full stop is lost; two NULs: lt-proc's bilingual step holds a flushed
        # text back until it reads past its NUL.
        self._process.stdin.write(_SPECIAL.sub(r"\\\1", text.replace("\0", " ")).encode() + b"\n\0\0")
        self._process.stdin.flush()
        out, deadline, fd = b"", time.monotonic() + TIMEOUT_S, self._process.stdout.fileno()
        while not out.endswith(b"\0\0"):
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError(f"no translation within {TIMEOUT_S:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("the Apertium pipeline ended")
            out += chunk
        return _ESCAPED.sub(r"\1", out.rstrip(b"\0").decode(errors="replace")).removesuffix("\n")

    def close(self) -> None:
        if self._process is not None:
            try:
                os.killpg(self._process.pid, 9)
            except ProcessLookupError:
                pass
            self._process.wait()
            self._process = None


class Glossary:
    """A word-for-word gloss into English from a FreeDict dictionary (dictd's files): for each word,
    of the first glosses of its entries the one most of them give, then the one most common in
    `wordfreq` ("Herr": "master", not "taskmaster"), trying the word without an inflection's ending
    when it has no entry ("Herrn"); closed-class words from `function_words`, which a dictionary
    glosses poorly ("den": "who"). Crude ("who has the theory of relativity developed?"), but the
    classifier reads it.
    Loaded at its first text: built from the dictionary once (a few seconds), then read from
    `cache_dir` (about 0.3 s; some 40 MB in memory)."""

    def __init__(self, name: str, function_words: dict[str, str], endings: tuple[str, ...],
                 cache_dir: Path | None = None):
        self.name, self.function_words, self.endings, self.cache_dir = name, function_words, endings, cache_dir
        self._glosses: dict[str, str] | None = None
        self._lock = threading.Lock()

    def translate(self, text: str) -> str:
        with self._lock:
            if self._glosses is None:
                self._glosses = self._cached()
        return "".join(self._word(token) for token in re.split(r"(\w+)", text))

    def _word(self, token: str) -> str:
        word = token.lower()
        if not word.isalpha():
            return token
        if word in self.function_words:
            return self.function_words[word]
        for stem in (word, *(word[:-len(end)] for end in self.endings if word.endswith(end))):
            if stem in self._glosses:
                return self._glosses[stem]
        return token

    def _cached(self) -> dict[str, str]:
        if self.cache_dir is None:
            return self._build()
        index = _glossary_files(self.name)[0]
        path = self.cache_dir / f"{self.name}-{cache_key(file_sha256(index), GLOSSARY_VERSION)}.json"
        if not path.exists():
            glosses = self._build()
            write_atomically(path, lambda tmp: tmp.write_text(json.dumps(glosses, ensure_ascii=False)))
            return glosses
        return json.loads(path.read_text())

    def _build(self) -> dict[str, str]:
        import gzip

        from wordfreq import zipf_frequency

        index, dictionary = _glossary_files(self.name)
        data = gzip.open(dictionary).read()  # dictzip is gzip
        candidates: dict[str, list[str]] = {}
        for line in index.read_text(encoding="utf-8").splitlines():
            headword, offset, length = line.split("\t")
            start = _base64(offset)
            lines = data[start:start + _base64(length)].decode(errors="replace").split("\n")
            gloss = re.sub(r"<[^>]*>|\[[^]]*]|\([^)]*\)", "", lines[1]).split(",")[0].strip() if len(lines) > 1 else ""
            if gloss and " " not in headword:
                candidates.setdefault(headword.lower(), []).append(gloss)
        # The gloss most of a word's entries give ("Ringe": "rings", not "bands"), then the commonest.
        return {word: max(sorted(set(glosses)), key=lambda g: (glosses.count(g), zipf_frequency(g, "en")))
                for word, glosses in candidates.items()}


def _base64(digits: str) -> int:
    """dictd's offsets: base 64, most significant digit first."""
    value = 0
    for digit in digits:
        value = value * 64 + _BASE64[digit]
    return value


_BASE64 = {digit: i for i, digit in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
GERMAN_ENDINGS = ("n", "en", "e", "s", "es", "er", "ern", "em")  # tried when a word has no entry
GERMAN_FUNCTION_WORDS = {
    "der": "the", "die": "the", "das": "the", "den": "the", "dem": "the", "des": "of the",
    "ein": "a", "eine": "a", "einen": "a", "einem": "a", "einer": "a", "eines": "of a",
    "wer": "who", "wen": "whom", "wem": "whom", "wessen": "whose", "was": "what", "wo": "where",
    "wann": "when", "wie": "how", "warum": "why", "wofür": "for what", "woher": "where from",
    "welcher": "which", "welche": "which", "welches": "which", "welchen": "which", "welchem": "which",
    "hat": "has", "haben": "have", "hatte": "had", "ist": "is", "sind": "are", "war": "was",
    "waren": "were", "wurde": "was", "wurden": "were", "wird": "will", "im": "in the", "am": "at the",
    "vom": "of the", "zum": "to the", "zur": "to the", "beim": "at the", "von": "of", "in": "in",
    "mit": "with", "für": "for", "auf": "on", "aus": "from", "nach": "to", "über": "about",
    "und": "and", "oder": "or", "nicht": "not", "kein": "no", "keine": "no", "er": "he", "sie": "she",
    "es": "it", "ich": "I", "du": "you", "wir": "we", "ihr": "her", "sein": "his", "seine": "his",
    "seinen": "his", "ihre": "her", "ihren": "her", "mir": "me", "mich": "me", "dir": "you",
}
GLOSSARIES = {"freedict-deu-eng": (GERMAN_FUNCTION_WORDS, GERMAN_ENDINGS)}
GLOSSARY_VERSION = 1  # bump when how a glossary is built changes


class Translator:
    """What the classifier reads of a conversation: each view, then its English translation if the
    view is in one of `languages`."""

    def __init__(self, languages: tuple[str, ...], cache_dir: Path | None = None):
        import py3langid.langid as langid

        check_languages(languages)
        self._identify = langid.LanguageIdentifier.from_modelpath(Path(langid.__file__).parent / langid.MODEL_FILE)
        self._identify.set_languages(["en", *languages])
        self._chains = {lang: LANGUAGES[lang] for lang in languages}
        # One step per pair, shared: French, Italian and Portuguese all end in Spanish-English.
        self._steps = {step: Glossary(step, *GLOSSARIES[step], cache_dir) if _glossary(step) else Pipeline(step)
                           for chain in self._chains.values() for step in chain}

    def language(self, text: str) -> str:
        return self._identify.classify(text)[0]

    def english(self, text: str) -> str | None:
        """`text` in English, or None where it is English already (or in no language translated)."""
        chain = self._chains.get(self.language(text))
        if chain is None:
            return None
        text = text[:MAX_CHARS]
        for step in chain:
            text = self._steps[step].translate(text)
        return text

    def views(self, views: list[str]) -> list[str]:
        """`views`, each followed by its translation where it has one: the last user turn's stays last."""
        return list(dict.fromkeys(v for view in views for v in (view, self.english(view)) if v))


@lru_cache(maxsize=None)
def translator(languages: tuple[str, ...], cache_dir: Path | None = None) -> Translator:
    """One translator per process and language set: policy reloads share its pipelines."""
    return Translator(languages, cache_dir)
