"""Losses against naive, loop-based references of the paper formulas."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssl_bf.methods.losses import (
    chance_loss_mocov3,
    chance_loss_queue,
    combine_streams,
    info_nce_queue,
    mocov3_contrastive,
)


def naive_info_nce(q, k, queue, t):
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ n) / t) for n in queue)
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def test_info_nce_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    queue = F.normalize(torch.randn(11, 8, generator=g), dim=1)
    got = info_nce_queue(q, k, queue, 0.2).item()
    assert abs(got - naive_info_nce(q, k, queue, 0.2)) < 1e-5


def test_info_nce_at_equal_logits_is_chance():
    q = F.normalize(torch.ones(4, 3), dim=1)
    queue = q[:1].repeat(9, 1)
    assert abs(info_nce_queue(q, q, queue, 0.1).item() - chance_loss_queue(9)) < 1e-5


def naive_mocov3(q, k_all, offset, t):
    q, k_all = F.normalize(q, dim=1), F.normalize(k_all, dim=1)
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(q[i] @ k) / t for k in k_all]
        total += -logits[offset + i] + math.log(sum(math.exp(v) for v in logits))
    return total / q.shape[0] * 2 * t


def test_mocov3_matches_the_formula_with_rank_offset():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(4, 5, generator=g)
    k_all = torch.randn(8, 5, generator=g)  # two "processes" of 4
    for offset in (0, 4):
        got = mocov3_contrastive(q, k_all, offset, 0.2).item()
        assert abs(got - naive_mocov3(q, k_all, offset, 0.2)) < 1e-5
    # the offset matters: rank 1's positives are rows 4..7
    assert abs(mocov3_contrastive(q, k_all, 0, 0.2) - mocov3_contrastive(q, k_all, 4, 0.2)) > 1e-3


def test_mocov3_gradient_flows_to_queries_only():
    q = torch.randn(3, 4, requires_grad=True)
    k = torch.randn(3, 4)
    mocov3_contrastive(q, k, 0, 1.0).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_chance_and_combination():
    assert abs(chance_loss_mocov3(256, 0.2) - 2 * math.log(256) * 0.4) < 1e-9
    a, b = torch.tensor(2.0), torch.tensor(5.0)
    assert combine_streams(a, None, 1.0) is a
    assert abs(combine_streams(a, b, 1.0).item() - 3.5) < 1e-6
    assert abs(combine_streams(a, b, 0.25).item() - (2 + 1.25) / 1.25) < 1e-6


def test_info_nce_equals_lightlys_memory_bank_loss():
    """The reason info_nce_queue is ours is its interface (see its docstring), not its value:
    on the same queries, keys and bank it equals lightly's NTXentLoss memory-bank branch."""
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(8, 16, generator=g), dim=1)
    k = F.normalize(torch.randn(8, 16, generator=g), dim=1)
    queue = F.normalize(torch.randn(64, 16, generator=g), dim=1)
    theirs = NTXentLoss(temperature=0.2, memory_bank_size=(64, 16))
    theirs.memory_bank.bank.copy_(queue)  # stored (K, d); handed out transposed
    assert torch.allclose(info_nce_queue(q, k, queue, 0.2), theirs(q, k), atol=1e-6)


def test_losses_stay_in_fp32_under_bf16_autocast():
    """Autocast recasts `@` to bf16 even on float32 inputs; the losses switch it off, so
    under CPU bf16 autocast they equal the fp32 reference (bf16 logits would be ~1e-3 off)."""
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(64, 128, generator=g), dim=1)
    k = F.normalize(torch.randn(64, 128, generator=g), dim=1)
    queue = F.normalize(torch.randn(4096, 128, generator=g), dim=1)
    reference = (info_nce_queue(q, k, queue, 0.1), mocov3_contrastive(q, k, 0, 0.2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (q @ queue.T).dtype == torch.bfloat16  # what the losses must not do
        mixed = (info_nce_queue(q, k, queue, 0.1), mocov3_contrastive(q, k, 0, 0.2))
    for ours, ref in zip(mixed, reference):
        assert ours.dtype == torch.float32
        assert torch.allclose(ours, ref, rtol=1e-6, atol=0)
