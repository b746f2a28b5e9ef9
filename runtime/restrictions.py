"""A policy compiled into the restrictions requests are classified by: the prompt classifier trained
(or loaded from its cache) for the policy's targets, the semantic index of the generating model's
vocabulary, and the core's Restrictions over both. `guard serve`, `guard proxy` and the benchmarks
all build theirs here, from the same options."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from guard.policy import Policy
from runtime.models import guard_home

if TYPE_CHECKING:
    from guard.restriction import Restrictions

log = logging.getLogger("guard.runtime")


class GuardOptions(BaseModel):
    """How a policy is enforced: the options serve, proxy and the benchmarks share (server.settings
    extends them)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    penalty: float = Field(default=8.0, ge=0, le=100, description="adaptive penalty strength, in logits")
    classifier: bool = Field(default=True, description="without the prompt classifier, every target restricts "
                                                       "every request")
    encoder: str = Field(default="all-MiniLM-L6-v2", description="sentence-transformers model of the classifier")
    target_fpr: float = Field(default=0.01, gt=0, lt=0.5, description="classifier false-positive rate to calibrate to")
    translate: str = Field(default="fr,es,it,pt,ca,de", description=(
        "languages whose conversations the classifier also reads in English: translated by Apertium, German "
        "glossed word for word (comma-separated; '' for none)"))

    @field_validator("translate")
    @classmethod
    def _translatable(cls, value: str) -> str:
        from classifiers.translation import check_languages

        check_languages(_languages(value))
        return value

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages of `translate`, in order."""
        return _languages(self.translate)


def _languages(translate: str) -> tuple[str, ...]:
    return tuple(lang.strip() for lang in translate.split(",") if lang.strip())


def build_restrictions(options: GuardOptions, policy: Policy, tokenizer_path: str | None,
                       version: int = 0) -> Restrictions:
    """Train (or load the cached) prompt classifier for `policy` and compile its restrictions.
    `tokenizer_path`: the generating model's tokenizer, for the semantic matching (None: no semantic
    matching; the proxy's filter level). `version`: the policy's version in the policy store."""
    from guard.restriction import Restrictions  # (the core and torch: not for reading the options)

    if not options.classifier or not policy.targets:
        return Restrictions(policy, options.penalty, version=version)
    from classifiers.classifier import train

    classifier = train(policy, encoder_name=options.encoder, target_fpr=options.target_fpr,
                       cache_dir=guard_home() / "classifiers")
    semantic = None
    if tokenizer_path is not None:
        from transformers import AutoTokenizer

        from guard.semantic import SemanticIndex

        semantic = SemanticIndex(AutoTokenizer.from_pretrained(tokenizer_path), classifier.encoder.embed,
                                 options.encoder, guard_home() / "semantic")
    from classifiers.translation import translator

    r = classifier.report
    log.info("classifier: threshold %.3f, out-of-fold FPR %.1f%% general / %.1f%% near-domain / %.1f%% made-up "
             "neighbours, FNR %.1f%% (%d examples, %.1f s)", r.threshold, 100 * r.fpr_general, 100 * r.fpr_near_domain,
             100 * r.fpr_neighbour, 100 * r.fnr, r.examples, r.seconds)
    translate = translator(options.languages, guard_home() / "translation").views if options.languages else None
    return Restrictions(policy, options.penalty, classifier, semantic, version, translate)
