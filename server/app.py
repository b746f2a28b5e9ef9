"""`guard serve`: `create_app(settings)`, the OpenAI routes over an embedded vLLM engine, its LoRA views
and full variants. The engines start in the app's lifespan; nothing heavy happens at import."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fastapi import FastAPI

from runtime.models import DEFAULT_MODEL, is_default_model, resolve_model
from server.assembly import assemble_app, open_live_policy
from server.engine import Engine
from server.engines.embedded import EmbeddedEngine, LoraView
from server.engines.variants import Variant, engine_lora_rank, load_variants, model_names
from server.serving.generate.deployment import Deployment, engine_serving
from server.serving.generate.serving import ServedModel
from server.settings import Settings


def served_name(settings: Settings) -> str:
    if settings.served_model_name:
        return settings.served_model_name
    if is_default_model(settings.model):
        return DEFAULT_MODEL
    return Path(settings.model).name if Path(settings.model).exists() else settings.model


EngineFactory = Callable[[str, dict[str, str], int | None, int], Engine]


def create_app(settings: Settings, make_engine: EngineFactory | None = None) -> FastAPI:
    """`guard serve`. Bad settings, policy or variants raise ValueError here, before any engine starts.

    `make_engine(model_path, loras, max_lora_rank, max_model_len)` builds an engine (default: an
    EmbeddedEngine from the settings; tests pass a fake). One engine serves the base model and its LoRA
    variants; each full-checkpoint variant gets its own, its context capped at the checkpoint's limit.
    """
    live = open_live_policy(settings)
    base_path = resolve_model(settings.model) if settings.variants else settings.model
    variants = load_variants(settings.variants, base_path) if settings.variants else []
    names = model_names(served_name(settings), variants)
    if make_engine is None:
        def make_engine(path, loras, rank, max_model_len):
            return EmbeddedEngine(path, max_model_len=max_model_len, kv_cache_gib=settings.kv_cache_gib,
                                  block_size=settings.block_size,
                                  enforce_eager=settings.enforce_eager, loras=loras, max_lora_rank=rank)

    def deploy() -> Deployment:
        model_path = resolve_model(settings.model)  # the bundled model is prepared here, once
        base = make_engine(model_path, {v.name: str(v.path) for v in variants if v.kind == "lora"},
                           engine_lora_rank(variants), settings.max_model_len)
        full = {v.name: make_engine(str(v.path), {}, None, min(settings.max_model_len, v.max_positions or 1 << 30))
                for v in variants if v.kind == "full"}

        def serve(variant: Variant | None) -> Engine:
            if variant is None:
                return base
            return LoraView(base, variant.name) if variant.kind == "lora" else full[variant.name]
        models = {name: ServedModel(serve(variant), guarded, str(variant.path) if variant else None)
                  for name, (variant, guarded) in names.items()}
        return Deployment([base, *full.values()], models, served_name(settings), model_path)

    return assemble_app("guard", settings, live, lambda decisions: engine_serving(settings, live, deploy, decisions))
