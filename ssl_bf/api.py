"""The Python API, for users who write their own loop or use the backbone downstream.

    import ssl_bf
    backbone = ssl_bf.load_backbone("runs/mocov3_bf")      # nn.Module, eval mode
    features = backbone(images)                             # (B, 3, S, S) normalised -> (B, dim)

    cfg = ssl_bf.load_config(["recipe=mocov3_bf", "model.width=0.25"])
    model = ssl_bf.build_model(cfg)                         # forward(x1, x2) -> {"loss", ...}
"""
from __future__ import annotations

import os

from torch import nn

from ssl_bf.config.schema import Config
from ssl_bf.methods import build_method


def build_model(config: Config, world_size: int = 1) -> nn.Module:
    """The training module of a config: `model(x1, x2)` returns a dict whose "loss" to
    backward; after each optimizer step call `model.update_key_encoder(momentum)`.
    `model.backbone` is the network to keep."""
    return build_method(config, world_size)


def load_backbone(path: str | os.PathLike) -> nn.Module:
    """A pretrained backbone in eval mode, from a run directory or a backbone .safetensors.

    It maps images normalised with the ImageNet mean/std - (B, 3, S, S) at the run's
    data.image_size - to pooled features (B, backbone.dim).
    """
    from ssl_bf.evaluation.load import load_target  # keeps `import ssl_bf` light

    return load_target([f"checkpoint={os.fspath(path)}"]).backbone.eval()
