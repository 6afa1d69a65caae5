"""The allowed range of every numeric key, checked before any data is read.

One table, so a new numeric key without a range fails tests/test_config_ranges.py
(which walks an invalid value of every key below and checks the one-line error).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ssl_bf.errors import UsageError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.high is None:
            if self.low_open and self.low == 0:
                return "positive"
            return f"greater than {self.low}" if self.low_open else f"at least {self.low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low}, {self.high}{right}"


COUNT = Range(1)  # at least one
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1)  # [0, 1]
BELOW_ONE = Range(0, 1, high_open=True)  # [0, 1): dropout, momentum-like coefficients

RANGES: dict[str, Range] = {
    "method.temperature": POSITIVE,
    "method.momentum": FRACTION,  # 1 = a frozen key encoder; 0 = a copy of the query encoder
    "method.momentum_end": FRACTION,
    "method.queue_size": COUNT,
    "method.bn_splits": COUNT,
    "method.proj_hidden": COUNT,
    "method.proj_out": COUNT,
    "method.proj_layers": COUNT,
    "method.pred_hidden": COUNT,
    "model.width": Range(0, 4, low_open=True),
    "model.patch_size": COUNT,
    "model.vit_depth": COUNT,
    "bf.layers": COUNT,
    "bf.heads": COUNT,
    "bf.dropout": BELOW_ONE,
    "bf.ffn_dim": COUNT,
    "bf.loss_weight": NON_NEGATIVE,
    "bf.lr_scale": NON_NEGATIVE,
    "bf.start_epoch": NON_NEGATIVE,
    "bf.gate_init": FRACTION,  # the gate mixes x and BF(x): 0 = plain, 1 = the full layer
    "data.subset": COUNT,
    "data.imbalance": COUNT,  # the ratio of the largest to the smallest class
    "data.image_size": Range(8),  # smaller crops leave nothing of a 32-px image's content
    "data.num_workers": NON_NEGATIVE,
    "data.cache_gb": NON_NEGATIVE,
    "data.shard_cache_gb": POSITIVE,
    "aug.min_scale": Range(0, 1, low_open=True),
    "aug.cj_strength": NON_NEGATIVE,
    "train.epochs": COUNT,
    "train.batch_size": Range(2),  # BatchNorm needs two samples
    "train.max_steps": COUNT,
    "train.seed": Range(0, 2**32 - 1),  # numpy's and most libraries' seed range
    "train.lr": POSITIVE,
    "train.weight_decay": NON_NEGATIVE,
    "train.sgd_momentum": BELOW_ONE,
    "train.lars_eta": POSITIVE,
    "train.betas": BELOW_ONE,  # each of the two
    "train.warmup_epochs": NON_NEGATIVE,
    "train.accumulate": COUNT,
    "train.checkpoint_every": NON_NEGATIVE,
    "train.keep_checkpoints": COUNT,
    "train.log_every": COUNT,
    "train.check_every": COUNT,
    "train.threads": COUNT,
    "knn.every": NON_NEGATIVE,
    "knn.k": COUNT,  # each
    "knn.temperature": POSITIVE,
    "knn.test_subset": COUNT,
    "knn.batch_size": COUNT,
    "linear.epochs": COUNT,
    "linear.batch_size": COUNT,
    "linear.lr": POSITIVE,
    "linear.weight_decay": NON_NEGATIVE,
    "linear.milestones": COUNT,  # each
    "linear.copies": COUNT,
    "probe.lr": POSITIVE,
    "probe.weight_decay": NON_NEGATIVE,
}


def lookup(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_ranges(cfg: Any) -> None:
    """UsageError naming the first key whose value (or list item) is out of its range."""
    for key, allowed in RANGES.items():
        value = lookup(cfg, key)
        items = value if isinstance(value, list) else [] if value is None else [value]
        for item in items:
            if not allowed.admits(item):
                subject = "every item must" if isinstance(value, list) else "must"
                raise UsageError(f"{key}: {subject} be {allowed.describe()}, got {value}")
