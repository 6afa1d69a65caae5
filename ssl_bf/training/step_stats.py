"""Per-step statistics and checks, kept on the device and read only when scheduled.

A GPU runs the kernels the host queued; whenever the host reads a value back (`.item()`, a
tensor in an `if`) it waits until the queue is empty, and the GPU idles until the host has
queued the next work. So a step only records: the losses and the embedding spread into
running sums, and whether its losses and gradients were finite into a count and the first
bad step. `check()` reads the flags - one sync and one tiny all-reduce, so every process
takes the same decision - every train.check_every steps and before a checkpoint;
`summary()` reads the sums at log time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from ssl_bf.methods.base import StepOutput
from ssl_bf.training.collapse import spread as embedding_spread

KEYS = ("loss", "loss_plain", "loss_bf", "spread")


@dataclass(frozen=True)
class Check:
    finite: bool  # every step since the last check had finite losses and gradients, everywhere
    stop: bool  # some process was asked to stop
    first_bad: int  # the first step (1-based) with a non-finite value, or -1


class StepStats:
    def __init__(self, accelerator: Accelerator):
        self.acc = accelerator
        self.has_bf = False  # a BatchFormer loss was seen (the row then carries loss_bf)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=accelerator.device)
        self._reset()

    def _reset(self) -> None:
        self.sums = torch.zeros(len(KEYS), device=self.acc.device)
        self.steps = 0
        self.since = time.time()

    def record(self, outputs: list[StepOutput], step: int,
               params: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Step `step` (1-based): were its losses - and the gradients of `params`, if given -
        finite? A device tensor, never read here; the first bad step is kept for check()."""
        values = [o.loss.detach().float().reshape(1) for o in outputs]
        grads = [p.grad for p in params or () if p.grad is not None]
        if grads:  # a finite loss can still give an overflowing gradient
            values.append(torch.stack(torch._foreach_norm(grads)).float())
        finite = torch.isfinite(torch.cat(values)).all()
        first = (self.first_bad < 0) & ~finite
        self.first_bad = torch.where(first, torch.full_like(self.first_bad, step), self.first_bad)
        return finite

    def check(self, stop_requested: bool) -> Check:
        """Read the flags since the last check (the one host sync), agreed by every process:
        the earliest bad step of any, and whether any was asked to stop."""
        first = self.first_bad.float()
        first = torch.where(first < 0, torch.full_like(first, float("inf")), first)
        flags = torch.stack([first, torch.full_like(first, float(stop_requested))])
        if self.acc.num_processes > 1:
            gathered = self.acc.gather(flags[None])  # (processes, 2)
            flags = torch.stack([gathered[:, 0].min(), gathered[:, 1].max()])
        first_bad, stop = flags.tolist()
        finite = first_bad == float("inf")
        return Check(finite, stop > 0, -1 if finite else int(first_bad))

    def forget_bad(self) -> None:
        """After a skipped step (train.on_nan=skip): the next check starts afresh."""
        self.first_bad.fill_(-1)

    def add(self, outputs: list[StepOutput]) -> None:
        n = len(outputs)
        loss = sum(o.loss.detach().float() for o in outputs) / n
        plain = sum(o.loss_plain.float() for o in outputs) / n
        has_bf = outputs[0].loss_bf is not None
        bf = sum(o.loss_bf.float() for o in outputs) / n if has_bf else torch.zeros_like(plain)
        q = outputs[-1].embedding.float()
        spread = embedding_spread(q)
        self.sums += torch.stack([loss, plain, bf, spread]).to(self.sums.device)
        self.steps += 1
        self.has_bf = has_bf

    def summary(self, global_batch: int) -> dict:
        """Means since the last summary, over steps and processes; resets."""
        means = self.acc.reduce(self.sums.clone(), reduction="mean") / max(1, self.steps)
        values = dict(zip(KEYS, means.tolist()))
        seconds = max(1e-9, time.time() - self.since)
        row = {"loss": values["loss"], "loss_plain": values["loss_plain"]}
        if self.has_bf:
            row["loss_bf"] = values["loss_bf"]
        row["spread"] = values["spread"]
        row["samples_per_s"] = self.steps * global_batch / seconds
        self._reset()
        return row
