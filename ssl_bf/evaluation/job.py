"""What every evaluator is given: a frozen backbone, where it runs, and what the rows need."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import nn

from ssl_bf.config.schema import Config


@dataclass(frozen=True)
class EvalJob:
    cfg: Config
    backbone: nn.Module
    accelerator: object
    classes: int
    # images per class in the pretraining split: with them, rows also come per class and per
    # many / medium / few group (evaluation/groups.py)
    counts: np.ndarray | None = None
    workers: int = 0  # DataLoader workers
    log: Callable[[str], None] | None = None  # progress lines (the main process's)
