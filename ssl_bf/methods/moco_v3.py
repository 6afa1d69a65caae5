"""MoCo-v3 (Chen, Xie, He 2021, arXiv 2104.02057), as in the official builder.py.

Both views are queries and keys; negatives are the other keys of the global
batch. With BatchFormer each view's batch has a second stream that shares the
predictor (one pass over both streams) and is scored against the same keys.
With `bf.keys` (the authors' builder.py) the keys have a BatchFormer stream too
and every (query stream, key stream) pairing is a loss term.
"""
from __future__ import annotations

import torch
from lightly.utils import dist
from torch import nn

from ssl_bf.config.schema import Config
from ssl_bf.models.heads import mocov3_predictor, mocov3_projector
from ssl_bf.methods.losses import chance_loss_mocov3, mocov3_contrastive
from ssl_bf.methods.key_encoder import KeyEncoder, gather_keys
from ssl_bf.methods.query_path import QueryPath, build_batchformer
from ssl_bf.methods.record import loss_record


class MoCoV3(nn.Module):
    def __init__(self, cfg: Config, backbone: nn.Module, world_size: int = 1):
        super().__init__()
        m = cfg.method
        projector = mocov3_projector(backbone.dim, m.proj_hidden, m.proj_out, m.proj_layers)
        predictor = mocov3_predictor(m.proj_out, m.pred_hidden)
        feat_dim = backbone.dim if cfg.bf.position == "pre_projector" else m.proj_out
        bf = build_batchformer(cfg.bf, feat_dim) if cfg.bf.enabled else None
        self.query = QueryPath(backbone, projector, predictor, bf, cfg.bf)
        self.key = KeyEncoder(backbone, projector)
        self.temperature = m.temperature
        self.bf_cfg = cfg.bf
        self._global_batch = cfg.train.batch_size // max(1, cfg.train.accumulate)

    @property
    def backbone(self) -> nn.Module:
        return self.query.backbone

    def update_key_encoder(self, m: float) -> None:
        self.key.update(self.query.backbone, self.query.projector, m)

    def chance_loss(self) -> float:
        return chance_loss_mocov3(self._global_batch, self.temperature)

    def _keys(self, x: torch.Tensor, bf_on: bool) -> list[torch.Tensor]:
        key_bf = self.query.stream(bf_on) if self.bf_cfg.keys else None
        return [gather_keys(k) for k in self.key(x, key_bf, self.bf_cfg.position)]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, bf_on: bool = True) -> dict:
        q1, q2 = self.query(x1, bf_on), self.query(x2, bf_on)
        k1, k2 = self._keys(x1, bf_on), self._keys(x2, bf_on)
        offset = dist.rank() * x1.shape[0]
        t = self.temperature
        losses = [[mocov3_contrastive(a, k2[j], offset, t) + mocov3_contrastive(b, k1[j], offset, t)
                   for j in range(len(k1))] for a, b in zip(q1, q2)]
        return loss_record(losses, self.bf_cfg,
                           q=nn.functional.normalize(q1[0].detach().float(), dim=1))
