"""The training order: global batches fixed by (seed, epoch), whatever the world size.

Every optimizer step consumes one global batch of `global_batch` indices from
the epoch's permutation; it is cut into `accumulate` micro-batches and each of
those into one slice per process. So 1 process x 2B and 2 processes x B see
the same samples at the same step, a resumed run can start at any step of an
epoch (what accelerate's skip_first_batches does, without reading the skipped
batches), and a checkpoint moves between world sizes.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler):
    """Yields lists of (epoch, index) keys: this process's micro-batches, in order."""

    def __init__(self, size: int, global_batch: int, accumulate: int, rank: int, world: int,
                 seed: int, epoch: int, start_step: int = 0):
        if global_batch % (accumulate * world):
            raise ValueError("global batch must divide by accumulate * world size")
        self.size, self.global_batch, self.accumulate = size, global_batch, accumulate
        self.rank, self.world, self.seed, self.epoch = rank, world, seed, epoch
        self.micro = global_batch // (accumulate * world)
        self.start_step = start_step

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Point the sampler at another epoch (and step): the DataLoader, and its
        persistent workers, stay; only the order of the indices changes."""
        self.epoch, self.start_step = epoch, start_step

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch  # the incomplete last batch is dropped

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_step) * self.accumulate

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.global_batch
            for a in range(self.accumulate):
                start = base + (a * self.world + self.rank) * self.micro
                yield [(self.epoch, i) for i in order[start:start + self.micro]]
