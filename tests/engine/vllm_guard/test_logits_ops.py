import torch

from vllm_guard.logits_ops import apply_sparse_bias, gather_row_biases


def test_sparse_bias_in_one_write():
    logits = torch.zeros(3, 5)
    rows, cols, values = gather_row_biases(
        [0, 2, 2],
        [(torch.tensor([1, 4]), torch.tensor([float("-inf"), -2.0])),
         (torch.tensor([0]), torch.tensor([-1.0])),
         (torch.tensor([0, 3]), torch.tensor([-0.5, float("-inf")]))],
        torch.device("cpu"),
    )
    out = apply_sparse_bias(logits, rows, cols, values)
    expected = torch.zeros(3, 5)
    expected[0, 1], expected[0, 4] = float("-inf"), -2.0
    expected[2, 0], expected[2, 3] = -1.5, float("-inf")  # duplicates accumulate
    assert out is logits and torch.equal(out, expected)


def test_no_rows_no_change():
    logits = torch.randn(2, 4)
    before = logits.clone()
    rows, cols, values = gather_row_biases([], [], torch.device("cpu"))
    assert torch.equal(apply_sparse_bias(logits, rows, cols, values), before)


def test_bias_keeps_dtype():
    logits = torch.zeros(1, 3, dtype=torch.bfloat16)
    apply_sparse_bias(logits, torch.tensor([0]), torch.tensor([2]), torch.tensor([-1.0]))
    assert logits.dtype == torch.bfloat16 and logits[0, 2].item() == -1.0
