"""The MoCo queue (wrap-around, persistence) and the per-step schedules."""
from __future__ import annotations

import math

import torch

from ssl_bf.key_queue import KeyQueue
from ssl_bf.schedules import lr_at, momentum_at


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


def test_lr_warmup_then_cosine():
    base, total, warm = 0.4, 110, 10
    assert abs(lr_at(0, total, warm, base) - 0.04) < 1e-12  # (0 + 1) / 10
    assert abs(lr_at(9, total, warm, base) - 0.4) < 1e-12
    assert abs(lr_at(10, total, warm, base) - 0.4) < 1e-12  # cosine starts at base
    assert abs(lr_at(60, total, warm, base) - 0.2) < 1e-12  # half way: base / 2
    assert lr_at(109, total, warm, base) < 1e-3
    assert abs(lr_at(5, 100, 0, 1.0) - 0.5 * (1 + math.cos(math.pi * 5 / 100))) < 1e-12
    assert lr_at(3, total, warm, base, "constant") == base * 4 / 10  # warmup still applies
    assert lr_at(100, total, warm, base, "constant") == base


def test_momentum_cosine_from_m0_to_one():
    assert momentum_at(0, 100, 0.99, 1.0) == 0.99
    assert abs(momentum_at(50, 100, 0.99, 1.0) - 0.995) < 1e-12
    assert momentum_at(100, 100, 0.99, 1.0) == 1.0
    assert momentum_at(37, 100, 0.999, None) == 0.999  # constant (MoCo-v2)
