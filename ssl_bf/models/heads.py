"""Projection and prediction heads, built from lightly's ProjectionHead blocks.

MoCo-v2 (Chen et al. 2020, arXiv 2003.04297): Linear-ReLU-Linear, no BN
(lightly's MoCoProjectionHead); optionally BN on the hidden layers (the BatchFormer
authors' MoCo-v2 head). MoCo-v3 (Chen, Xie, He 2021, arXiv 2104.02057,
§3 and the official builder.py): BN+ReLU after every hidden layer, the last
layer of the projector ends in BN with affine=False, the predictor has no last
BN, and no Linear in either MLP has a bias (builder.py `_build_mlp`,
`nn.Linear(dim1, dim2, bias=False)`). lightly 1.6 has no MoCo-v3 head with the
affine-free last BN, so those are assembled from ProjectionHead blocks here.
"""
from __future__ import annotations

from lightly.models.modules.heads import ProjectionHead
from torch import nn


def mocov2_projector(in_dim: int, hidden: int | None, out: int, layers: int = 2,
                     batch_norm: bool = False) -> nn.Module:
    """(B, in_dim) -> (B, out): `layers` Linear layers, ReLU after each hidden one.
    hidden=None: the official width, the backbone's feature dim (facebookresearch/moco
    builder.py L37-40: `dim_mlp = self.encoder_q.fc.weight.shape[1]`, `nn.Linear(dim_mlp,
    dim_mlp)`: 2048 for ResNet-50, 512 for ResNet-18). batch_norm: BN after each hidden Linear,
    none at the output, as the BatchFormer authors' MoCo-v2 head (zhihou7/BatchFormer
    builder_v2.py L54-64); the official head has none. The default (2 layers, no BN) is
    lightly's MoCoProjectionHead, block for block."""
    hidden = hidden or in_dim
    blocks, dim = [], in_dim
    for _ in range(layers - 1):
        blocks.append((dim, hidden, nn.BatchNorm1d(hidden) if batch_norm else None, nn.ReLU()))
        dim = hidden
    blocks.append((dim, out, None, None))
    return ProjectionHead(blocks)


def mocov3_projector(in_dim: int, hidden: int | None, out: int, layers: int) -> nn.Module:
    """(B, in_dim) -> (B, out); 2 layers for ResNets, 3 for ViTs (MoCo-v3 §4).
    hidden=None: the backbone's feature dim (the recipes set MoCo-v3's 4096)."""
    blocks = []
    dim, hidden = in_dim, hidden or in_dim
    for _ in range(layers - 1):
        blocks.append((dim, hidden, nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)))
        dim = hidden
    blocks.append((dim, out, nn.BatchNorm1d(out, affine=False), None))
    return ProjectionHead(blocks)


def mocov3_predictor(dim: int, hidden: int) -> nn.Module:
    """(B, dim) -> (B, dim); 2 layers, no BN at the output."""
    return ProjectionHead([
        (dim, hidden, nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)),
        (hidden, dim, None, None, False),  # no bias: official builder.py _build_mlp
    ])
