"""The loader's replaced images, counted and named once each.

An unreadable image is replaced by the next one in the loader (data/pretrain_input.py); the batch
carries the index it stood for. Counting is the trainer's (the count is in the checkpoint);
naming each file once on stderr is this module's.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch


class BadImageLog:
    def __init__(self, name: Callable[[int], str]):
        self.name = name
        self.named: set[int] = set()

    def note(self, bad: torch.Tensor, count: int) -> int:
        """`bad`: a batch's replaced indices, -1 where none (a CPU tensor from the loader, so
        reading it costs no device sync). Returns `count` plus this batch's replacements."""
        for i in bad[bad >= 0].tolist():
            count += 1
            if i not in self.named:
                self.named.add(i)
                print(f"warning: unreadable image replaced by the next one ({count} "
                      f"replacements so far): {self.name(i)}", file=sys.stderr, flush=True)
        return count
