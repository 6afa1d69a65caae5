"""MoCo-v2 and MoCo-v3, each with an optional BatchFormer stream."""
from __future__ import annotations

from torch import nn

from ssl_bf.models.backbones import build_backbone
from ssl_bf.config.schema import Config
from ssl_bf.methods.moco_v2 import MoCoV2
from ssl_bf.methods.moco_v3 import MoCoV3

METHODS = {"mocov2": MoCoV2, "mocov3": MoCoV3}


def build_method(cfg: Config, world_size: int = 1) -> nn.Module:
    """The training module: forward(x1, x2, bf_on) -> {'loss', 'loss_plain', 'loss_bf', 'q'}."""
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    return METHODS[cfg.method.name](cfg, backbone, world_size)


__all__ = ["MoCoV2", "MoCoV3", "build_method"]
