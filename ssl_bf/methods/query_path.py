"""The query path shared by both methods, with BatchFormer as an extra stream.

    backbone -> [BF: pre_projector] -> projector -> [BF: post_projector] -> predictor

Where BatchFormer sits, the batch becomes two streams - the plain features h and
BF(h) - concatenated along the batch, so every later module (the shared head)
sees both in one pass; at the end they are split again. Keys never take this
path. With `scope=global` BF attends over the batch of every process (a
differentiable all-gather, so gradients reach the other processes' samples).
"""
from __future__ import annotations

import torch
from lightly.utils import dist
from torch import nn

from ssl_bf.batchformer import BatchFormer
from ssl_bf.config_schema import BatchFormerConfig


def build_batchformer(cfg: BatchFormerConfig, dim: int) -> BatchFormer:
    bf = BatchFormer(dim, cfg.layers, cfg.heads, cfg.dropout, cfg.ffn_dim,
                     cfg.norm_first, cfg.mask_self, cfg.gate_init, cfg.stop_mates_grad)
    # bf.trainable=false: the fixed random layer (with dropout) that the authors'
    # MoCo-v3 code actually ran, because its momentum-encoder setup froze it.
    bf.requires_grad_(cfg.trainable)
    return bf


class QueryPath(nn.Module):
    """(B, 3, S, S) -> a list of (B, out) tensors: [plain] or [plain, batchformer]."""

    def __init__(self, backbone: nn.Module, projector: nn.Module,
                 predictor: nn.Module | None = None, bf: BatchFormer | None = None,
                 bf_cfg: BatchFormerConfig | None = None):
        super().__init__()
        self.backbone, self.projector = backbone, projector
        self.predictor = predictor if predictor is not None else nn.Identity()
        self.bf = bf
        self.bf_cfg = bf_cfg or BatchFormerConfig()

    def forward(self, x: torch.Tensor, bf_on: bool = True) -> list[torch.Tensor]:
        use_bf = self.bf is not None and bf_on
        h = self.backbone(x)
        if use_bf and self.bf_cfg.position == "pre_projector":
            h = torch.cat([h, self.batchformer(h)])
        z = self.projector(h)
        if use_bf and self.bf_cfg.position == "post_projector":
            z = torch.cat([z, self.batchformer(z)])
        return list(self.predictor(z).chunk(2 if use_bf else 1))

    def batchformer(self, h: torch.Tensor) -> torch.Tensor:
        if self.bf_cfg.detach:  # idea under study: BF may not steer the encoder
            h = h.detach()
        if self.bf_cfg.scope == "local" or dist.world_size() == 1:
            return self.bf(h)
        everyone = torch.cat(dist.gather(h))  # (world * B, d), differentiable
        start = dist.rank() * h.shape[0]
        return self.bf(everyone)[start:start + h.shape[0]]
