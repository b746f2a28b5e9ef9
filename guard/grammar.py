"""Structured output that survives a rewind: a JSON grammar (xgrammar, vLLM's own backend) over token ids.

vLLM's structured outputs keep the grammar's state inside the engine, from the first generated token;
a rewind resubmits the prompt plus the accepted output, where that state would start again from
nothing and reject the rest of the document. So a guarded request carries its JSON schema in its
spec, and the guard's logits processor keeps the grammar itself: a matcher advanced through the
accepted tokens a rewind replays, then through each new token, masking every token the grammar
does not allow before the guard's own biases. The grammar is compiled as vLLM compiles it (any
whitespace; `{"type": "object"}` for a JSON object), so an answer the guard leaves alone is vLLM's.
The schema's checks live here; its compiled grammars and token masks, in the engine adapter
(vllm_guard.grammars).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

ANY_OBJECT = '{"type": "object"}'  # response_format json_object, as vLLM compiles it


@lru_cache(maxsize=256)  # a request's spec is checked in the API process and the worker, at every attempt
def check_schema(schema: str) -> None:
    """ValueError (its message names what is wrong) unless `schema` is a JSON schema xgrammar compiles."""
    import xgrammar

    try:
        xgrammar.Grammar.from_json_schema(schema)
    except Exception as exc:  # noqa: BLE001 - xgrammar raises several kinds
        reason = re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", str(exc).splitlines()[0])  # its log prefix
        raise ValueError(f"a JSON schema the grammar cannot be built from: {reason}") from None


def parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
