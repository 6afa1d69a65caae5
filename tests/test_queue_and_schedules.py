"""The MoCo queue (wrap-around, persistence) and the per-step schedules."""
from __future__ import annotations

import math

import torch

from ssl_bf.methods.key_queue import KeyQueue
from ssl_bf.training.schedules import lr_at, momentum_at


def test_queue_wraps_without_dropping_keys():
    q = KeyQueue(size=10, dim=2)
    written = []
    for step in range(4):  # batches of 3 do not divide 10
        keys = torch.full((3, 2), float(step)) + torch.arange(3.0)[:, None] / 10
        q.enqueue(keys)
        written.extend(keys.tolist())
    # 12 keys into 10 slots: slots 0,1 hold keys 10,11; slots 2..9 hold keys 2..9
    expected = written[10:12] + written[2:10]
    assert q.keys.tolist() == expected
    assert int(q.ptr) == 2


def test_queue_survives_state_dict_round_trip():
    a = KeyQueue(8, 4)
    a.enqueue(torch.randn(5, 4))
    b = KeyQueue(8, 4)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.keys, b.keys) and int(b.ptr) == 5
    assert set(a.state_dict()) == {"keys", "ptr"}  # persistent buffers


def test_queue_keeps_newest_when_batch_exceeds_size():
    q = KeyQueue(4, 1)
    q.enqueue(torch.arange(6.0)[:, None])
    assert sorted(q.keys.flatten().tolist()) == [2.0, 3.0, 4.0, 5.0]


def official_mocov3_lr(epoch: int, i: int, iters: int, epochs: int, warmup: int, base: float):
    """facebookresearch/moco-v3 main_moco.py adjust_learning_rate, called with the fractional
    epoch `epoch + i / iters_per_epoch` before iteration i."""
    e = epoch + i / iters
    if e < warmup:
        return base * e / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))


def test_lr_warmup_then_cosine_equals_the_official_formula():
    base, iters, epochs, warmup = 0.4, 7, 12, 2
    total = iters * epochs
    for step in range(total):
        expected = official_mocov3_lr(step // iters, step % iters, iters, epochs, warmup, base)
        assert abs(lr_at(step, total, warmup * iters, base) - expected) < 1e-12, step
    assert lr_at(0, total, warmup * iters, base) == 0.0  # the first step trains at lr 0
    assert abs(lr_at(1, total, 14, base) - base / 14) < 1e-12
    assert abs(lr_at(5, 100, 0, 1.0) - 0.5 * (1 + math.cos(math.pi * 5 / 100))) < 1e-12
    assert lr_at(3, 110, 10, base, "constant") == base * 3 / 10  # warmup still applies
    assert lr_at(100, 110, 10, base, "constant") == base


def test_momentum_cosine_from_m0_to_one():
    assert momentum_at(0, 100, 0.99, 1.0) == 0.99
    assert abs(momentum_at(50, 100, 0.99, 1.0) - 0.995) < 1e-12
    assert momentum_at(100, 100, 0.99, 1.0) == 1.0
    assert momentum_at(37, 100, 0.999, None) == 0.999  # constant (MoCo-v2)
