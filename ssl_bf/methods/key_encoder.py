"""The momentum (key) encoder: a frozen deep copy of backbone + projector.

Its parameters follow the query side by EMA (lightly's update_momentum); its
BatchNorm buffers are its own (train-mode statistics), as in the official
MoCo code. The predictor is never part of it. BatchFormer is not either: with
`bf.keys` (the authors' design) the method passes the query side's module in at
call time, so the key encoder runs the very same layer - never copied, never
EMA-updated, never frozen by this module - and it stays out of the state dict here.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightly.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils import dist
from torch import nn

from ssl_bf.methods.query_path import Stream, encode


class KeyEncoder(nn.Module):
    """(B, 3, S, S) -> [(B, out)] L2-normalised keys, or [plain, BatchFormer] keys when a
    BatchFormer stream is passed; computed without gradient."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, shuffle_bn: bool = False,
                 head_groups: int = 1):
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.projector = copy.deepcopy(projector)
        deactivate_requires_grad(self)
        self.shuffle_bn = shuffle_bn
        self.head_groups = head_groups  # query_path.encode: split BN in the projector

    @torch.no_grad()
    def update(self, backbone: nn.Module, projector: nn.Module, m: float) -> None:
        update_momentum(backbone, self.backbone, m)
        update_momentum(projector, self.projector, m)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, bf: Stream | None = None,
                position: str = "post_projector") -> list[torch.Tensor]:
        streams = 1 if bf is None else 2
        if not self.shuffle_bn:
            k = encode(self.backbone, self.projector, x, bf, position, self.head_groups)
            return [F.normalize(s, dim=1) for s in k.chunk(streams)]
        # Shuffle-BN (He et al. 2020 §3.3): keys are normalised in a batch whose
        # composition differs from their queries'. Across processes when there
        # are several; on one, a permutation that, with split BN, regroups them.
        # A BatchFormer stream sees the shuffled batch, as in the authors' builder_v2.py
        # (L179-188: the key encoder, layer included, runs on the shuffled images).
        distributed = dist.world_size() > 1
        x, order = batch_shuffle(x, distributed=distributed)
        k = encode(self.backbone, self.projector, x, bf, position, self.head_groups)
        return [F.normalize(batch_unshuffle(s, order, distributed=distributed), dim=1)
                for s in k.chunk(streams)]


@torch.no_grad()
def gather_keys(k: torch.Tensor) -> torch.Tensor:
    """Keys of every process, in rank order (no gradient): (world * B, d)."""
    return concat_all_gather(k.contiguous()) if dist.world_size() > 1 else k
