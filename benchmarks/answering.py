"""How every suite gets its answers: through the server's own guarded path on a vLLM engine.

`served` starts an engine on a model and its LoRA variants, `guard_restrictions` builds what the
guard enforces for a policy, and `greedy_answers` asks the questions, guarded or not. GUARD and BASE
name the starting model's answers in the results: through the guard, and as it is.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path

from benchmarks.detection import answer
from runtime.restrictions import GuardOptions, build_restrictions
from server.engines.embedded import EmbeddedEngine
from server.engines.variants import engine_lora_rank

GUARD, BASE = "guard", "base"


def guard_restrictions(policy, target: Path):
    """The guard's restrictions for `policy` on `target`'s tokenizer, and what they cost to make."""
    started = time.perf_counter()
    restrictions = build_restrictions(GuardOptions(), policy, str(target))
    return restrictions, {"seconds": round(time.perf_counter() - started, 1),
                          "kind": "classifier training + span index (cached classifiers load in seconds)"}


@asynccontextmanager
async def served(model: Path, loras=()):
    """A vLLM engine on `model` (eager, 1 GiB of KV cache) with `loras` (inspected LoRA variants)."""
    from transformers import AutoConfig  # transformers: only when an engine starts

    positions = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", 2048)
    engine = EmbeddedEngine(str(model), max_model_len=min(2048, positions), kv_cache_gib=1, enforce_eager=True,
                            loras={v.name: str(v.path) for v in loras}, max_lora_rank=engine_lora_rank(list(loras)))
    await engine.start()
    try:
        yield engine
    finally:
        engine.close()


async def greedy_answers(view, restrictions, questions: list[str], guarded: bool, max_tokens: int) -> list[str]:
    """`view`'s greedy answers to `questions`, all at once; through the guard when `guarded`."""
    replies = await asyncio.gather(*(answer(view, restrictions, q, guarded, max_tokens) for q in questions))
    return [text for text, _ in replies]
