"""What the engine hands a monitor (the kNN monitor, evaluation/monitor.py) at every epoch
end, on every process - never itself."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class EpochEnd:
    """What a monitor is given at an epoch end (on every process)."""
    epoch: int  # epochs done
    step: int  # optimizer steps done
    last: bool  # training ends here (the last epoch, or train.max_steps reached)
    backbone: torch.nn.Module  # the training backbone, unwrapped (this process's copy)
    accelerator: object
    probe: object = None  # the OnlineProbe (probe.online), or None


# A monitor runs at epoch ends on every process: EpochEnd -> metrics or None.
Monitor = Callable[[EpochEnd], "dict | None"]
