"""MoCo-v2 (He et al. 2020, arXiv 1911.05722; Chen et al. 2020, arXiv 2003.04297).

Queries from the trained encoder, keys from its EMA copy, negatives from a
queue of past keys. With BatchFormer the query batch has a second stream,
BF(z), normalised and scored against the same positive key and queue.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils import dist
from torch import nn

from ssl_bf.config_schema import Config
from ssl_bf.heads import mocov2_projector
from ssl_bf.key_queue import KeyQueue
from ssl_bf.losses import chance_loss_queue, combine_streams, info_nce_queue
from ssl_bf.methods.key_encoder import KeyEncoder, gather_keys
from ssl_bf.methods.query_path import QueryPath, build_batchformer
from ssl_bf.split_bn import convert_split_bn


class MoCoV2(nn.Module):
    def __init__(self, cfg: Config, backbone: nn.Module, world_size: int = 1):
        super().__init__()
        m = cfg.method
        if world_size == 1 and m.bn_splits > 1:
            convert_split_bn(backbone, m.bn_splits)  # before the key copy: both split
        projector = mocov2_projector(backbone.dim, m.proj_hidden, m.proj_out)
        feat_dim = backbone.dim if cfg.bf.position == "pre_projector" else m.proj_out
        bf = build_batchformer(cfg.bf, feat_dim) if cfg.bf.enabled else None
        self.query = QueryPath(backbone, projector, None, bf, cfg.bf)
        shuffle = world_size > 1 or m.bn_splits > 1
        self.key = KeyEncoder(backbone, projector, shuffle_bn=shuffle)
        self.queue = KeyQueue(m.queue_size, m.proj_out)
        self.temperature, self.symmetric = m.temperature, m.symmetric
        self.bf_weight = cfg.bf.loss_weight

    @property
    def backbone(self) -> nn.Module:
        return self.query.backbone

    def update_key_encoder(self, m: float) -> None:
        self.key.update(self.query.backbone, self.query.projector, m)

    def chance_loss(self) -> float:
        return chance_loss_queue(self.queue.size) * (2 if self.symmetric else 1)

    def _term(self, x_q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, bf_on: bool):
        streams = [F.normalize(s, dim=1) for s in self.query(x_q, bf_on)]
        losses = [info_nce_queue(q, k, negatives, self.temperature) for q in streams]
        return losses, streams[0]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, bf_on: bool = True) -> dict:
        # A snapshot: the enqueue below writes the buffer in place, and autograd
        # needs the negatives as they were (official MoCo: queue.clone().detach()).
        negatives = self.queue.keys.clone()
        k2 = self.key(x2)
        losses, q = self._term(x1, k2, negatives, bf_on)
        new_keys = [k2]
        if self.symmetric:  # official CIFAR demo: loss_12 + loss_21, both on the old queue
            k1 = self.key(x1)
            back, _ = self._term(x2, k1, negatives, bf_on)
            losses = [a + b for a, b in zip(losses, back)]
            new_keys.append(k1)
        self.queue.enqueue(gather_keys(torch.cat(new_keys)))
        bf_loss = losses[1] if len(losses) > 1 else None
        return {"loss": combine_streams(losses[0], bf_loss, self.bf_weight),
                "loss_plain": losses[0].detach(),
                "loss_bf": None if bf_loss is None else bf_loss.detach(),
                "q": q.detach(), "keys": k2}
