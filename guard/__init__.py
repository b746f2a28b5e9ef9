"""GUARD core: policy, phrase compilation, matching, the guarded-text state machine; pure Python,
engine-agnostic (it imports neither torch nor vLLM: the engine adapter, vllm_guard, plugs it in)."""
