"""The Python API, for users who write their own loop or use the backbone downstream.

    import ssl_bf
    backbone = ssl_bf.load_backbone("runs/mocov3_bf")      # nn.Module, eval mode
    features = backbone(images)                             # (B, 3, S, S) normalised -> (B, dim)

    cfg = ssl_bf.load_config(["recipe=mocov3_bf", "model.width=0.25"])
    model = ssl_bf.build_model(cfg)                         # forward([x1, x2]) -> StepOutput
"""
from __future__ import annotations

import os

from torch import nn

from ssl_bf.config.schema import Config
from ssl_bf.methods import Method, build_method


def build_model(config: Config, world_size: int = 1) -> Method:
    """The training module of a config (ssl_bf/methods/base.py): `model([x1, x2])` takes the
    views of one batch and returns a StepOutput whose `.loss` to backward; after each optimizer
    step call `model.update_key_encoder(momentum)`. `model.backbone` is the network to keep."""
    return build_method(config, world_size)


def load_backbone(path: str | os.PathLike) -> nn.Module:
    """A pretrained backbone in eval mode, from a run directory or a backbone .safetensors.

    It maps images normalised with the ImageNet mean/std - (B, 3, S, S) at the run's
    data.image_size - to pooled features (B, backbone.dim).
    """
    from ssl_bf.evaluation.load import load_target  # keeps `import ssl_bf` light

    return load_target([f"checkpoint={os.fspath(path)}"]).backbone.eval()


def load_timm(path: str | os.PathLike) -> nn.Module:
    """The backbone as a timm model (eval mode; needs timm): from a run directory, a
    backbone .safetensors, or a backbone_timm.safetensors written by `python -m ssl_bf.export`.
    Same features as load_backbone, num_classes=0 (add a head with model.reset_classifier(n))."""
    from ssl_bf.rundir.checkpoint import load_safetensors
    from ssl_bf.rundir.export import backbone_metadata, read_metadata
    from ssl_bf.rundir.timm_export import create_timm_model, to_timm_state

    path = os.fspath(path)
    if path.endswith(".safetensors") and read_metadata(path).get("format") == "timm":
        meta = read_metadata(path)
        return create_timm_model(load_safetensors(path), meta)
    from ssl_bf.evaluation.load import load_target

    target = load_target([f"checkpoint={path}"])
    meta = backbone_metadata(target.cfg.model, target.cfg.data.image_size)
    return create_timm_model(to_timm_state(target.backbone.state_dict(), meta), meta)
