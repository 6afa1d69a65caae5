"""MoCo-v3 (Chen, Xie, He 2021, arXiv 2104.02057), as in the official builder.py.

Both views are queries and keys; negatives are the other keys of the global
batch. With BatchFormer each view's batch has a second stream that shares the
predictor (one pass over both streams) and is scored against the same keys.
With `bf.keys` (the authors' builder.py) the keys have a BatchFormer stream too
and every (query stream, key stream) pairing is a loss term.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from lightly.utils import dist
from torch import nn

from ssl_bf.config.schema import BatchFormerConfig
from ssl_bf.methods.base import StepOutput, step_output
from ssl_bf.methods.key_encoder import KeyEncoder, gather_keys
from ssl_bf.methods.losses import chance_loss_mocov3, mocov3_contrastive
from ssl_bf.methods.momentum import MomentumMethod
from ssl_bf.methods.query_path import QueryPath, build_batchformer
from ssl_bf.models.heads import mocov3_predictor, mocov3_projector


@dataclass(frozen=True)
class MoCoV3Settings:
    """The method's own settings (recipes/mocov3.yaml cites each value)."""
    temperature: float = 0.2
    proj_hidden: int = 4096
    proj_out: int = 256
    proj_layers: int = 2
    pred_hidden: int = 4096
    global_batch: int = 256  # keys per loss term (every process's), for the chance loss


class MoCoV3(MomentumMethod):
    def __init__(self, backbone: nn.Module, settings: MoCoV3Settings = MoCoV3Settings(),
                 bf: BatchFormerConfig = BatchFormerConfig()):
        super().__init__()
        s = settings
        projector = mocov3_projector(backbone.dim, s.proj_hidden, s.proj_out, s.proj_layers)
        predictor = mocov3_predictor(s.proj_out, s.pred_hidden)
        feat_dim = backbone.dim if bf.position == "pre_projector" else s.proj_out
        layer = build_batchformer(bf, feat_dim) if bf.enabled else None
        self.query = QueryPath(backbone, projector, predictor, layer, bf)
        self.key = KeyEncoder(backbone, projector)
        self.temperature, self.global_batch = s.temperature, s.global_batch
        self.bf_cfg = bf

    def chance_loss(self) -> float:
        return chance_loss_mocov3(self.global_batch, self.temperature)

    def _keys(self, x: torch.Tensor, bf_on: bool) -> list[torch.Tensor]:
        key_bf = self.key_stream(bf_on)
        return [gather_keys(k) for k in self.key(x, key_bf, self.bf_cfg.position)]

    def forward(self, views: Sequence[torch.Tensor], bf_on: bool = True) -> StepOutput:
        self._check_views(views)
        x1, x2 = views
        q1, q2 = self.query(x1, bf_on), self.query(x2, bf_on)
        k1, k2 = self._keys(x1, bf_on), self._keys(x2, bf_on)
        offset = dist.rank() * x1.shape[0]
        t = self.temperature
        losses = [[mocov3_contrastive(a, k2[j], offset, t) + mocov3_contrastive(b, k1[j], offset, t)
                   for j in range(len(k1))] for a, b in zip(q1, q2)]
        return step_output(losses, self.bf_cfg,
                           embedding=nn.functional.normalize(q1[0].detach().float(), dim=1))
