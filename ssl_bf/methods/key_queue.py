"""MoCo's queue of negative keys: a persistent ring buffer.

(Named key_queue, not queue, so it can never shadow the standard library's
`queue` module when a script in this package is run by path.)

lightly's MemoryBankModule is not used: its bank is not saved with the model
and it drops keys when the batch does not divide the queue (docs/design.md, Decisions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeyQueue(nn.Module):
    """K x d buffer of L2-normalised keys and a write pointer, both in state_dict.

    `enqueue(keys)` writes (n, d) keys at the pointer and wraps around the end,
    so any batch size works and no key is dropped (n <= K).
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        n = keys.shape[0]
        if n > self.size:  # only the newest K keys can be held
            keys, n = keys[-self.size:], self.size
        idx = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[idx] = keys.detach().to(self.keys.dtype)
        self.ptr.copy_((self.ptr + n) % self.size)
