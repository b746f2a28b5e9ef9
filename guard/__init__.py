"""GUARD core: policy, phrase compilation, matching and the per-step logits ops (engine-agnostic)."""
