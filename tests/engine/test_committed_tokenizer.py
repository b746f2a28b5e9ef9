"""The unit tier's committed tokenizer (tests/data/tokenizer) is the prepared bundled model's."""

from tests.unit.conftest import committed_tokenizer

SAMPLES = ["Who wrote the Harry Potter books? J.K. Rowling did.", "Qui a écrit Le Seigneur des anneaux ?",
           "<|im_start|>user\nHi<|im_end|>", "  spaced\ttabs\nand 1234 digits, ünïcödé ✓"]


def test_the_committed_tokenizer_is_the_bundled_models(tokenizer):
    committed = committed_tokenizer()
    assert len(committed) == len(tokenizer) and committed.get_vocab() == tokenizer.get_vocab()
    for text in SAMPLES:
        assert committed.encode(text) == tokenizer.encode(text)
    messages = [{"role": "user", "content": "Who wrote it?"}]
    assert (committed.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    assert (committed.eos_token_id, committed.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
