"""What both MoCos share: a query path (QueryPath) and its momentum copy (KeyEncoder)."""
from __future__ import annotations

from torch import nn

from ssl_bf.config.schema import BatchFormerConfig
from ssl_bf.methods.base import Method
from ssl_bf.methods.key_encoder import KeyEncoder
from ssl_bf.methods.query_path import QueryPath, Stream


class MomentumMethod(Method):
    """A Method whose subclass sets `self.query` (QueryPath), `self.key` (its KeyEncoder) and
    `self.bf_cfg` in its constructor."""

    query: QueryPath
    key: KeyEncoder
    bf_cfg: BatchFormerConfig

    @property
    def backbone(self) -> nn.Module:
        return self.query.backbone

    @property
    def batchformer(self) -> nn.Module | None:
        return self.query.bf

    def update_key_encoder(self, momentum: float) -> None:
        self.key.update(self.query.backbone, self.query.projector, momentum)

    def key_stream(self, bf_on: bool) -> Stream | None:
        """The BatchFormer stream the keys take too (bf.keys, the authors' design), or None."""
        return self.query.stream(bf_on) if self.bf_cfg.keys else None
