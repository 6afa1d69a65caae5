"""Proof that a linear probe left its backbone alone.

MoCo's main_lincls.py runs a `sanity_check` after training: every backbone
tensor must equal the pretrained one. A probe that lets BatchNorm update its
running statistics (train mode), or that leaks a gradient step into the trunk,
reports the accuracy of a different, partly fine-tuned network - this catches
both, weights and buffers alike.
"""
from __future__ import annotations

import torch
from torch import nn


class BackboneMoved(RuntimeError):
    """A backbone weight or BatchNorm statistic changed during a frozen evaluation."""


def snapshot(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer (BN running mean/var/count included)."""
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def check_unchanged(backbone: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Raise BackboneMoved naming the tensors that differ from `before` (bit for bit)."""
    now = backbone.state_dict()
    moved = sorted(k for k, v in before.items()
                   if k not in now or not torch.equal(now[k].cpu(), v.cpu()))
    if moved:
        raise BackboneMoved(f"{len(moved)} backbone tensor(s) changed during the linear probe, "
                            f"first '{moved[0]}': the backbone must stay frozen, in eval mode")
