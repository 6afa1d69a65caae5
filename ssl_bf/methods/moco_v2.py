"""MoCo-v2 (He et al. 2020, arXiv 1911.05722; Chen et al. 2020, arXiv 2003.04297).

Queries from the trained encoder, keys from its EMA copy, negatives from a
queue of past keys. With BatchFormer the query batch has a second stream,
BF(z), normalised and scored against the same positive key and queue. With
`bf.keys` (the authors' builder_v2.py) the keys have a BatchFormer stream too:
every query stream is scored against every key stream (4B rows against one
queue), and both key streams are enqueued.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bf.config.schema import BatchFormerConfig
from ssl_bf.methods.base import StepOutput, step_output
from ssl_bf.methods.key_encoder import KeyEncoder, gather_keys
from ssl_bf.methods.key_queue import KeyQueue
from ssl_bf.methods.losses import chance_loss_queue, info_nce_queue
from ssl_bf.methods.momentum import MomentumMethod
from ssl_bf.methods.query_path import QueryPath, build_batchformer
from ssl_bf.models.heads import mocov2_projector
from ssl_bf.models.split_bn import convert_split_bn


@dataclass(frozen=True)
class MoCoV2Settings:
    """The method's own settings (recipes/mocov2.yaml cites each value)."""
    temperature: float = 0.2
    queue_size: int = 4096
    symmetric: bool = False  # the official CIFAR demo's loss_12 + loss_21
    split_groups: int = 1  # BatchNorm groups on this process (1: plain BN)
    shuffle_bn: bool = False  # keys normalised in a shuffled batch (He et al. 2020, §3.3)
    proj_hidden: int | None = None  # null: the backbone's width
    proj_out: int = 128
    proj_layers: int = 2
    proj_bn: bool = False  # BatchNorm in the head (the BatchFormer authors' v2 head)


class MoCoV2(MomentumMethod):
    def __init__(self, backbone: nn.Module, settings: MoCoV2Settings = MoCoV2Settings(),
                 bf: BatchFormerConfig = BatchFormerConfig()):
        super().__init__()
        s, groups = settings, settings.split_groups
        if groups > 1:
            convert_split_bn(backbone, groups)  # before the key copy: both split
        projector = mocov2_projector(backbone.dim, s.proj_hidden, s.proj_out, s.proj_layers,
                                     s.proj_bn)
        head_groups = groups if s.proj_bn else 1  # the head's BN is per group too
        if head_groups > 1:
            convert_split_bn(projector, groups, (nn.BatchNorm1d,))
        feat_dim = backbone.dim if bf.position == "pre_projector" else s.proj_out
        layer = build_batchformer(bf, feat_dim) if bf.enabled else None
        self.query = QueryPath(backbone, projector, None, layer, bf, groups, head_groups)
        self.key = KeyEncoder(backbone, projector, shuffle_bn=s.shuffle_bn, head_groups=head_groups)
        self.queue = KeyQueue(s.queue_size, s.proj_out)
        # bf.queue=per_stream: the BatchFormer keys get a queue of their own
        self.bf_queue = KeyQueue(s.queue_size, s.proj_out) if bf.queue == "per_stream" else None
        self.temperature, self.symmetric = s.temperature, s.symmetric
        self.bf_cfg = bf

    def chance_loss(self) -> float:
        return chance_loss_queue(self.queue.size) * (2 if self.symmetric else 1)

    def _direction(self, x_q: torch.Tensor, x_k: torch.Tensor, negatives: list[torch.Tensor],
                   bf_on: bool):
        """Loss of each (query stream, key stream) pairing for queries x_q, keys x_k;
        negatives[t] are key stream t's (one tensor for every stream when shared)."""
        key_bf = self.key_stream(bf_on)
        keys = self.key(x_k, key_bf, self.bf_cfg.position)
        queries = [F.normalize(s, dim=1) for s in self.query(x_q, bf_on)]
        losses = [[info_nce_queue(q, k, negatives[t], self.temperature) for t, k in enumerate(keys)]
                  for q in queries]
        return losses, queries[0], keys

    def _negatives(self) -> list[torch.Tensor]:
        """A snapshot per key stream: the enqueue below writes the buffers in place, and
        autograd needs the negatives as they were (official MoCo: queue.clone().detach())."""
        shared = self.queue.keys.clone()
        return [shared, shared if self.bf_queue is None else self.bf_queue.keys.clone()]

    def _enqueue(self, new_keys: list[list[torch.Tensor]]) -> None:
        """new_keys: per direction, [plain] or [plain, BF] keys."""
        if self.bf_queue is None:  # one queue, both streams: builder_v2.py L186-188, L217
            self.queue.enqueue(gather_keys(torch.cat([k for keys in new_keys for k in keys])))
            return
        for t, queue in enumerate((self.queue, self.bf_queue)):
            queue.enqueue(gather_keys(torch.cat([keys[t] for keys in new_keys])))

    def forward(self, views: Sequence[torch.Tensor], bf_on: bool = True) -> StepOutput:
        self._check_views(views)
        x1, x2 = views
        negatives = self._negatives()
        losses, q, k2 = self._direction(x1, x2, negatives, bf_on)
        new_keys = [k2]
        if self.symmetric:  # official CIFAR demo: loss_12 + loss_21, both on the old queue
            back, _, k1 = self._direction(x2, x1, negatives, bf_on)
            losses = [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(losses, back)]
            new_keys.append(k1)
        self._enqueue(new_keys)
        return step_output(losses, self.bf_cfg, embedding=q.detach(), keys=k2[0])
