"""Prompt classifier: which forget targets, if any, a conversation is about."""
