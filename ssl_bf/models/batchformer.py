"""BatchFormer (Hou, Yu, Tao, CVPR 2022, arXiv 2203.01522): attention across a batch.

The B feature vectors of a batch are one sequence of length B fed to a
transformer encoder layer - no positional encoding, no mask - so each sample's
feature is refined by the others'. The authors' layer is
`nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=d, dropout=0.5)`
(their MoCo-v3 and long-tail code); the defaults here are the same.
"""
from __future__ import annotations

import torch
from torch import nn

from ssl_bf.models.own_grad_layer import own_grad_layer


class BatchFormer(nn.Module):
    """(B, d) -> (B, d). Optionally forbids each sample from attending to itself."""

    def __init__(self, dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.5,
                 ffn_dim: int | None = None, norm_first: bool = False,
                 mask_self: bool = False, gate_init: float | None = None,
                 stop_mates_grad: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"BatchFormer: feature dim {dim} is not divisible by {heads} heads")
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=ffn_dim or dim,
                                           dropout=dropout, batch_first=True,
                                           norm_first=norm_first)
        # enable_nested_tensor only matters for padded batches, which never occur here.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.mask_self = mask_self
        self.stop_mates_grad = stop_mates_grad  # see ssl_bf/models/own_grad_layer.py
        # Gated residual (this project's idea, cf. LayerScale / ReZero): output
        # x + g * (layer(x) - x) with a learnt per-channel g starting at gate_init,
        # so the BF stream starts as (almost) the plain one and the layer can only
        # move it as far as the loss finds useful. None = the authors' plain layer.
        self.gate = (None if gate_init is None
                     else nn.Parameter(torch.full((dim,), float(gate_init))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.mask_self:  # True = may not attend; B >= 2 leaves every row one key
            mask = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        if self.stop_mates_grad:
            out = x
            for layer in self.encoder.layers:
                out = own_grad_layer(layer, out, mask)
        else:
            out = self.encoder(x.unsqueeze(0), mask=mask).squeeze(0)
        return out if self.gate is None else x + self.gate * (out - x)
