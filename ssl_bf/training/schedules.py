"""Per-step schedules (DINO-style: a value for every optimizer step).

lr: linear warmup from 0, then half-cosine to 0 (MoCo-v3 main_moco.py's
adjust_learning_rate at the fractional epoch of each iteration, so per step:
lr = base * t / W during the warmup, 0 at step 0; MoCo-v2's cosine schedule is
the warmup=0 case). lightly's cosine_warmup_schedule warms up one step ahead,
base * (t + 1) / W, which is why it is not used here. Momentum: MoCo-v3's cosine from m0 to
1 (lightly's cosine_schedule gives the same curve).
"""
from __future__ import annotations

import math

from lightly.utils.scheduler import cosine_schedule


def lr_at(step: int, total: int, warmup: int, base: float, schedule: str = "cosine") -> float:
    """Learning rate before optimizer step `step` (0-based) of `total`."""
    if warmup > 0 and step < warmup:
        return base * step / warmup  # main_moco.py: lr = base * epoch / warmup_epochs
    if schedule == "constant":  # as lightly's MoCo example trains
        return base
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def momentum_at(step: int, total: int, start: float, end: float | None) -> float:
    """Key-encoder EMA momentum after optimizer step `step`; constant when end is None."""
    if end is None:
        return start
    # lightly's curve over max_steps=total+1 is exactly MoCo-v3's
    # 1 - (1 - m0) * (1 + cos(pi * t / T)) / 2 for t = 0..T.
    return cosine_schedule(min(step, total), total + 1, start, end)
