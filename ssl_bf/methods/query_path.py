"""The query path shared by both methods, with BatchFormer as an extra stream.

    backbone -> [BF: pre_projector] -> projector -> [BF: post_projector] -> predictor

Where BatchFormer sits, the batch becomes two streams - the plain features h and
BF(h) - concatenated along the batch, so every later module (the shared head)
sees both in one pass; at the end they are split again. With `bf.keys` the key
encoder runs the same module at the same position (`encode` below serves both);
otherwise keys never take it. With `scope=global` BF attends over the batch of
every process (a differentiable all-gather, so gradients reach the other
processes' samples); with `scope=split` within each of the `groups` contiguous
chunks that split BN normalises apart - on one process, the devices it stands in
for. Keys are shuffled before the key encoder, so a key's group is not its
query's, as on several GPUs with shuffle-BN.
"""
from __future__ import annotations

from typing import Callable

import torch
from lightly.utils import dist
from torch import nn

from ssl_bf.config.schema import BatchFormerConfig
from ssl_bf.models.batchformer import BatchFormer

Stream = Callable[[torch.Tensor], torch.Tensor]


def build_batchformer(cfg: BatchFormerConfig, dim: int) -> BatchFormer:
    bf = BatchFormer(dim, cfg.layers, cfg.heads, cfg.dropout, cfg.ffn_dim,
                     cfg.norm_first, cfg.mask_self, cfg.gate_init, cfg.stop_mates_grad)
    # bf.trainable=false: the fixed random layer (with dropout) that the authors'
    # MoCo-v3 code actually ran, because its momentum-encoder setup froze it.
    bf.requires_grad_(cfg.trainable)
    return bf


def group_major(rows: int, streams: int, groups: int) -> torch.Tensor:
    """The order that puts each split group's rows of every stream together: [stream; group;
    row] -> [group; stream; row]. On GPUs each device's head sees its own plain and
    BatchFormer rows (builder_v2.py L13-17: the layer's output is concatenated per device)."""
    return torch.arange(rows).view(streams, groups, -1).transpose(0, 1).reshape(-1)


def encode(backbone: nn.Module, projector: nn.Module, x: torch.Tensor,
           bf: Stream | None = None, position: str = "post_projector",
           head_groups: int = 1) -> torch.Tensor:
    """(B, 3, S, S) -> (B, out), or (2B, out) = [plain; BatchFormer] when `bf` is given.
    head_groups > 1: the projector's BatchNorm is split BN over that many groups, and each
    group holds both streams of its own samples (rows reordered for it and back)."""
    h = backbone(x)
    if bf is not None and position == "pre_projector":
        h = torch.cat([h, bf(h)])
        if head_groups > 1:  # the inverse of [stream; group] -> [group; stream] swaps them back
            order = group_major(h.shape[0], 2, head_groups).to(h.device)
            return projector(h[order])[group_major(h.shape[0], head_groups, 2).to(h.device)]
    z = projector(h)
    if bf is not None and position == "post_projector":
        z = torch.cat([z, bf(z)])
    return z


class QueryPath(nn.Module):
    """(B, 3, S, S) -> a list of (B, out) tensors: [plain] or [plain, batchformer]."""

    def __init__(self, backbone: nn.Module, projector: nn.Module,
                 predictor: nn.Module | None = None, bf: BatchFormer | None = None,
                 bf_cfg: BatchFormerConfig | None = None, groups: int = 1,
                 head_groups: int = 1):
        super().__init__()
        self.backbone, self.projector = backbone, projector
        self.predictor = predictor if predictor is not None else nn.Identity()
        self.bf = bf
        self.bf_cfg = bf_cfg or BatchFormerConfig()
        self.groups = groups  # split BN's groups on this process (1: none)
        self.head_groups = head_groups  # the same, when the projector has split BN too

    def stream(self, bf_on: bool) -> Stream | None:
        """The BatchFormer stream this step, or None (no layer, or not yet switched on)."""
        return self.batchformer if self.bf is not None and bf_on else None

    def forward(self, x: torch.Tensor, bf_on: bool = True) -> list[torch.Tensor]:
        bf = self.stream(bf_on)
        z = encode(self.backbone, self.projector, x, bf, self.bf_cfg.position, self.head_groups)
        return list(self.predictor(z).chunk(1 if bf is None else 2))

    def batchformer(self, h: torch.Tensor) -> torch.Tensor:
        if self.bf_cfg.detach:  # idea under study: BF may not steer the encoder
            h = h.detach()
        if self.bf_cfg.scope == "split" and self.groups > 1:
            return torch.cat([self.bf(chunk) for chunk in h.chunk(self.groups)])
        if self.bf_cfg.scope != "global" or dist.world_size() == 1:
            return self.bf(h)
        everyone = torch.cat(dist.gather(h))  # (world * B, d), differentiable
        start = dist.rank() * h.shape[0]
        return self.bf(everyone)[start:start + h.shape[0]]
