"""One optimizer step: the engine's and benchmarks/throughput.py's (which times this).

Forward and backward over the micro-batches (gradients synchronised on the last),
the finiteness check, the optimizer step and the key encoder's EMA update. The
caller sets the step's seed and supplies lr and momentum from the schedules.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn
from torch.autograd.profiler import record_function

from ssl_bf.methods.base import StepOutput
from ssl_bf.training.optim import set_lr
from ssl_bf.training.step_stats import Check, StepStats


@dataclass
class StepResult:
    outputs: list[StepOutput]  # the method's per micro-batch
    check: Check | None  # the flags read this step (a scheduled check), else None
    applied: bool  # the update was made (not held back by a check or fp16's scaler)


@dataclass
class OptimizerStep:
    model: nn.Module  # as accelerate prepared it (DDP on several processes)
    method: nn.Module  # the unwrapped method: key encoder, chance loss
    acc: object  # the Accelerator
    optimizer: torch.optim.Optimizer
    stats: StepStats
    # Parameters whose gradients must be finite; None = the loss alone (fp16's GradScaler
    # owns overflowing gradients and skips those steps itself).
    checked: list[torch.Tensor] | None

    def __call__(self, views: Iterable[list[torch.Tensor]], micro_batches: int,
                 lr: float, momentum: float, step: int, bf_on: bool = True, check: bool = False,
                 stop: Callable[[], bool] = lambda: False) -> StepResult:
        """Step `step` (1-based). Nothing is read back from the device unless `check`: then the
        finiteness flags since the last check and `stop()` (whether this process was asked to
        stop) are read and agreed across processes before the update, which a non-finite
        value holds back (StepResult.check)."""
        set_lr(self.optimizer, lr)
        outputs = []
        for i, batch_views in enumerate(views):
            last = i == micro_batches - 1
            sync = contextlib.nullcontext() if last else self.acc.no_sync(self.model)
            with sync:
                with record_function("## forward"):
                    out = self.model(batch_views, bf_on=bf_on)
                with record_function("## backward"):
                    self.acc.backward(out.loss / micro_batches)
            outputs.append(out)
        with record_function("## checks"):
            self.stats.record(outputs, step, self.checked)
            verdict = self.stats.check(stop()) if check else None
        applied = verdict is None or verdict.finite
        if applied:
            with record_function("## optimizer"):
                self.optimizer.step()
            # fp16: GradScaler skips a step whose gradients overflowed (it reads that flag on
            # the host itself); the key encoder then stays as it is too
            applied = not getattr(self.optimizer, "step_was_skipped", False)
            if applied:
                with record_function("## ema"):
                    self.method.update_key_encoder(momentum)
        self.optimizer.zero_grad(set_to_none=True)
        with record_function("## stats"):
            self.stats.add(outputs)
        return StepResult(outputs, verdict, applied)
