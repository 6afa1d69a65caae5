"""Per-step statistics, kept on the device and reduced across processes only at log time."""
from __future__ import annotations

import time

import torch
from accelerate import Accelerator

from ssl_bf.methods.base import StepOutput
from ssl_bf.training.collapse import spread as embedding_spread

KEYS = ("loss", "loss_plain", "loss_bf", "spread")


class StepStats:
    def __init__(self, accelerator: Accelerator):
        self.acc = accelerator
        self.has_bf = False  # a BatchFormer loss was seen (the row then carries loss_bf)
        self._reset()

    def _reset(self) -> None:
        self.sums = torch.zeros(len(KEYS), device=self.acc.device)
        self.steps = 0
        self.since = time.time()

    def flags(self, outputs: list[StepOutput], stop_requested: bool,
              params: list[torch.Tensor] | None = None) -> tuple[bool, bool]:
        """(losses - and gradients of `params`, if given - finite on every process,
        some process was asked to stop).

        One tiny all-reduce per step, so every process takes the same decision."""
        finite = all(bool(torch.isfinite(o.loss).item()) for o in outputs)
        grads = [p.grad for p in params or () if p.grad is not None]
        if finite and grads:  # a finite loss can still give an overflowing gradient
            finite = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all().item())
        if self.acc.num_processes == 1:
            return finite, stop_requested
        t = torch.tensor([float(not finite), float(stop_requested)], device=self.acc.device)
        t = self.acc.reduce(t, reduction="sum")
        return bool(t[0] == 0), bool(t[1] > 0)

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
