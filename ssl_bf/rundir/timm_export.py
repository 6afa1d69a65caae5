"""The backbone in timm's layout: where most users' fine-tuning code lives.

ResNets: timm's ResNet keeps torchvision's parameter names, so the tensors go over
unchanged (full width only: timm fixes the plain stem at 64 channels), and the CIFAR
stem (3x3 conv, stride 1, no max-pool) is patched in after create_model, as
for torchvision. ViTs: torchvision's VisionTransformer names are mapped to timm's
(both are pre-norm blocks with a fused qkv projection, LayerNorm eps 1e-6, exact GELU,
the class token after the last norm as the feature).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ssl_bf.errors import UsageError

TIMM_VIT = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224"}

# torchvision VisionTransformer key (per block i) -> timm VisionTransformer key
VIT_BLOCK_KEYS = {"ln_1": "norm1", "self_attention.in_proj_weight": "attn.qkv.weight",
                  "self_attention.in_proj_bias": "attn.qkv.bias",
                  "self_attention.out_proj": "attn.proj", "ln_2": "norm2",
                  "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
VIT_KEYS = {"class_token": "cls_token", "conv_proj": "patch_embed.proj",
            "encoder.pos_embedding": "pos_embed", "encoder.ln": "norm"}
BLOCK = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.(.+)$")


def timm_spec(meta: dict[str, str]) -> tuple[str, dict]:
    """(timm model name, create_model keyword arguments) of a backbone file's metadata."""
    name = meta["backbone"]
    if name.startswith("resnet"):
        width = float(meta.get("width", 1.0))
        if width != 1.0:  # timm's ResNet takes `channels`, but its plain stem is fixed at 64
            raise UsageError(f"timm export: timm has no ResNet of width {width} (its plain stem "
                             "is fixed at 64 channels); full-width ResNets and ViTs export")
        return name, {"num_classes": 0}
    return TIMM_VIT[name], {"num_classes": 0, "img_size": int(meta["image_size"]),
                            "patch_size": int(meta["patch_size"]), "depth": int(meta["vit_depth"])}


def _rename(key: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return None


def to_timm_state(state: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, torch.Tensor]:
    """The backbone's tensors under timm's names."""
    if meta["backbone"].startswith("resnet"):
        return dict(state)
    out = {}
    for key, tensor in state.items():
        block = BLOCK.match(key)
        new = (f"blocks.{block.group(1)}.{_rename(block.group(2), VIT_BLOCK_KEYS)}"
               if block and _rename(block.group(2), VIT_BLOCK_KEYS) else _rename(key, VIT_KEYS))
        if new is None:
            raise UsageError(f"timm export: no timm name for the ViT tensor '{key}'")
        out[new] = tensor
    return out


def create_timm_model(timm_state: dict[str, torch.Tensor], meta: dict[str, str]) -> nn.Module:
    """The timm model of a backbone (tensors under timm's names: to_timm_state), its weights
    loaded strictly, in eval mode."""
    try:
        import timm
    except ImportError:
        raise UsageError('the timm export needs timm: pip install -e ".[timm]"') from None
    name, kwargs = timm_spec(meta)
    model = timm.create_model(name, pretrained=False, **kwargs)
    if meta.get("cifar_stem") == "true":  # as models/backbones.py builds it
        stem = model.conv1.out_channels
        model.conv1 = nn.Conv2d(3, stem, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.load_state_dict(timm_state, strict=True)
    return model.eval()


def write_timm_file(state: dict[str, torch.Tensor], meta: dict[str, str],
                    path: str | os.PathLike) -> Path:
    """A safetensors file in timm's names; its metadata says how to build the model."""
    name, kwargs = timm_spec(meta)
    info = {"format": "timm", "timm_model": name, "timm_kwargs": json.dumps(kwargs),
            "cifar_stem": meta.get("cifar_stem", "false"), "source_format": meta.get("format", "")}
    tensors = {k: v.contiguous() for k, v in to_timm_state(state, meta).items()}
    save_file(tensors, str(path), metadata={**meta, **info})
    os.chmod(path, 0o644)
    return Path(path)
