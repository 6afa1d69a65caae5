"""The momentum (key) encoder: a frozen deep copy of backbone + projector.

Its parameters follow the query side by EMA (lightly's update_momentum); its
BatchNorm buffers are its own (train-mode statistics), as in the official
MoCo code. BatchFormer and the predictor are never part of it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightly.models.utils import (batch_shuffle, batch_unshuffle, concat_all_gather,
                                  deactivate_requires_grad, update_momentum)
from lightly.utils import dist
from torch import nn


class KeyEncoder(nn.Module):
    """(B, 3, S, S) -> (B, out) L2-normalised keys, computed without gradient."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, shuffle_bn: bool = False):
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.projector = copy.deepcopy(projector)
        deactivate_requires_grad(self)
        self.shuffle_bn = shuffle_bn

    @torch.no_grad()
    def update(self, backbone: nn.Module, projector: nn.Module, m: float) -> None:
        update_momentum(backbone, self.backbone, m)
        update_momentum(projector, self.projector, m)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shuffle_bn:
            return F.normalize(self.projector(self.backbone(x)), dim=1)
        # Shuffle-BN (He et al. 2020 §3.3): keys are normalised in a batch whose
        # composition differs from their queries'. Across processes when there
        # are several; on one, a permutation that, with split BN, regroups them.
        distributed = dist.world_size() > 1
        x, order = batch_shuffle(x, distributed=distributed)
        k = self.projector(self.backbone(x))
        return F.normalize(batch_unshuffle(k, order, distributed=distributed), dim=1)


@torch.no_grad()
def gather_keys(k: torch.Tensor) -> torch.Tensor:
    """Keys of every process, in rank order (no gradient): (world * B, d)."""
    return concat_all_gather(k.contiguous()) if dist.world_size() > 1 else k
