"""backbone.safetensors: the backbone alone, in torchvision's state-dict keys.

No projector, predictor, key encoder or BatchFormer tensor is written, so the
file is what a downstream user loads (strictly) into a torchvision model. The
architecture travels in the safetensors metadata.
"""
from __future__ import annotations

import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ssl_bf.config.derived import cifar_stem, vit_depth, vit_patch_size
from ssl_bf.config.schema import ModelConfig
from ssl_bf.errors import UsageError
from ssl_bf.rundir.checkpoint import load_safetensors, state_mismatch

BACKBONE_FILE = "backbone.safetensors"


def backbone_metadata(model: ModelConfig, image_size: int) -> dict[str, str]:
    meta = {"format": "torchvision", "backbone": model.backbone, "width": str(model.width),
            "image_size": str(image_size)}
    if model.backbone.startswith("resnet"):
        meta["cifar_stem"] = str(cifar_stem(model, image_size)).lower()
    else:
        meta["patch_size"] = str(vit_patch_size(model, image_size))
        meta["vit_depth"] = str(vit_depth(model))
    return meta


def export_backbone(backbone: nn.Module, model: ModelConfig, image_size: int,
                    path: str | os.PathLike) -> Path:
    path = Path(path)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(state, str(tmp), metadata=backbone_metadata(model, image_size))
    os.chmod(tmp, 0o644)  # safetensors creates 0600 files; the export is meant to be shared
    os.replace(tmp, path)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types
        raise UsageError(f"cannot read {path} as safetensors: {str(err).splitlines()[0]}") from None


def model_config_from_metadata(meta: dict[str, str]) -> tuple[ModelConfig, int]:
    """(ModelConfig, image_size) recorded in a backbone file by export_backbone."""
    if meta.get("format") != "torchvision" or "backbone" not in meta:
        raise UsageError("backbone file carries no ssl_bf metadata; pass model.* and "
                         "data.image_size")
    cfg = ModelConfig(backbone=meta["backbone"], width=float(meta.get("width", 1.0)))
    if "cifar_stem" in meta:
        cfg.cifar_stem = meta["cifar_stem"] == "true"
    if "patch_size" in meta:
        cfg.patch_size, cfg.vit_depth = int(meta["patch_size"]), int(meta["vit_depth"])
    return cfg, int(meta["image_size"])


def load_backbone_into(backbone: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load weights strictly; a mismatch is a usage error naming the first bad key."""
    state = load_safetensors(path)
    mismatch = state_mismatch(backbone.state_dict(), state)
    if mismatch:
        raise UsageError(f"checkpoint {path} does not match the backbone: {mismatch}")
    backbone.load_state_dict(state, strict=True)
    return backbone
