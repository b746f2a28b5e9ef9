"""Conversations in other languages, put into English for the prompt classifier.

The classifier's sentence encoder knows English only, and no multilingual encoder ships its weights on
PyPI. So a view of a conversation (guard.conversation) that py3langid reads as one of `LANGUAGES` is
also translated into English by Apertium, a rule-based machine translation system from Debian's
packages (`make setup` installs them), and the classifier judges both: "Qui a écrit Le Seigneur des
anneaux ?" becomes "That has written The Gentleman of the rings ?", which the classifier flags where
the French alone reaches nothing. Where Debian has no direct pair into English, the text goes
through Spanish. German has no pair at all: a German question is flagged only by the names it uses.

Each language pair's pipeline is one long-lived chain of Apertium's programs in null-flush mode: a
text in, its translation out, in 2-4 ms. It starts when its language is first seen (about 100 ms
once), so a server pays its memory (40-100 MB a pair, most of it dictionaries; the pair into English
is shared) only for the languages it is asked in. A pipeline that fails or stalls is killed and raises
`TranslationError` (the request fails closed), and is started afresh for the next text.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import threading
import time
from functools import lru_cache
from pathlib import Path

MODES = Path("/usr/share/apertium/modes")
# Into English, through Spanish where Debian has no direct pair (each name is a .mode file in MODES).
LANGUAGES: dict[str, tuple[str, ...]] = {
    "fr": ("fr-es", "spa-eng"),
    "es": ("spa-eng",),
    "it": ("ita-spa", "spa-eng"),
    "pt": ("pt-es", "spa-eng"),
    "ca": ("cat-eng",),
}
# Debian's packages for them, as the Makefile's APERTIUM installs them:
PACKAGES = "apertium cg3 apertium-fr-es apertium-eng-spa apertium-spa-ita apertium-es-pt apertium-eng-cat"
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
    modes = list(dict.fromkeys(m for lang in languages for m in LANGUAGES[lang]))
    missing = [m for m in modes if not (MODES / f"{m}.mode").is_file()]
    missing += sorted({program for m in modes if m not in missing for program in _programs(m)
                       if shutil.which(program) is None})
    if missing:
        raise ValueError(f"Apertium's {', '.join(missing)} not installed; run `make setup` "
                         f"(apt-get install {PACKAGES}), or pass --translate '' to judge only English")


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


class Translator:
    """What the classifier reads of a conversation: each view, then its English translation if the
    view is in one of `languages`."""

    def __init__(self, languages: tuple[str, ...]):
        import py3langid.langid as langid

        check_languages(languages)
        self._identify = langid.LanguageIdentifier.from_modelpath(Path(langid.__file__).parent / langid.MODEL_FILE)
        self._identify.set_languages(["en", *languages])
        self._chains = {lang: LANGUAGES[lang] for lang in languages}
        # One pipeline per mode, shared: French, Italian and Portuguese all end in Spanish-English.
        self._pipelines = {mode: Pipeline(mode) for chain in self._chains.values() for mode in chain}

    def language(self, text: str) -> str:
        return self._identify.classify(text)[0]

    def english(self, text: str) -> str | None:
        """`text` in English, or None where it is English already (or in no language translated)."""
        chain = self._chains.get(self.language(text))
        if chain is None:
            return None
        text = text[:MAX_CHARS]
        for mode in chain:
            text = self._pipelines[mode].translate(text)
        return text

    def views(self, views: list[str]) -> list[str]:
        """`views`, each followed by its translation where it has one: the last user turn's stays last."""
        return list(dict.fromkeys(v for view in views for v in (view, self.english(view)) if v))


@lru_cache(maxsize=None)
def translator(languages: tuple[str, ...]) -> Translator:
    """One translator per process and language set: policy reloads share its pipelines."""
    return Translator(languages)
