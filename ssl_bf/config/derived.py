"""Quantities derived from the config, computed here and nowhere else.

Static ones (the backbone's feature width, the ViT patch, the scaled lr) need the
config alone, so validation can check them before any data is read; the step plan
also needs the number of processes and of pretraining images.
"""
from __future__ import annotations

from dataclasses import dataclass

from ssl_bf.config.methods import traits
from ssl_bf.config.schema import Config, ModelConfig
from ssl_bf.errors import UsageError

# ResNet stage-4 channels x block expansion (torchvision resnet18 / resnet50) and the
# ViT widths (DeiT-Tiny / -Small, as MoCo-v3's vits.py); models/backbones.py builds them.
RESNET_WIDTH = {"resnet18": (512, 1), "resnet50": (512, 4)}
VIT_WIDTH = {"vit_tiny": 192, "vit_small": 384}


def resnet_planes(width: float) -> list[int]:
    """Channels of the four ResNet stages at a channel multiplier."""
    return [max(1, round(p * width)) for p in (64, 128, 256, 512)]


def backbone_dim(model: ModelConfig) -> int:
    """The pooled feature width the backbone outputs."""
    if model.backbone in RESNET_WIDTH:
        _, expansion = RESNET_WIDTH[model.backbone]
        return resnet_planes(model.width)[3] * expansion
    return VIT_WIDTH[model.backbone]


def cifar_stem(model: ModelConfig, image_size: int) -> bool:
    """A ResNet's 3x3 stem without max-pool (small images, up to 64 px) or ImageNet's."""
    return model.cifar_stem if model.cifar_stem is not None else image_size <= 64


def vit_depth(model: ModelConfig) -> int:
    """ViT blocks: 12 (ViT-S / DeiT) unless model.vit_depth says otherwise."""
    return model.vit_depth or 12


def vit_patch_size(model: ModelConfig, image_size: int) -> int:
    """Patch 4 for CIFAR-sized inputs (8x8 tokens at 32 px), else ViT's 16."""
    return model.patch_size or (4 if image_size <= 64 else 16)


def batchformer_dim(cfg: Config) -> int:
    """The width the BatchFormer layer attends over: the projector's output after it,
    the backbone's features before it."""
    if cfg.bf.position == "post_projector":
        return cfg.method.proj_out
    return backbone_dim(cfg.model)


def scaled_lr(cfg: Config) -> float:
    """train.lr is per 256 samples (Goyal et al. 2017's linear scaling, as MoCo-v3)."""
    return cfg.train.lr * cfg.train.batch_size / 256


@dataclass(frozen=True)
class Plan:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    bf_start_step: int
    lr: float  # after the warmup, before the schedule's decay
    probe_lr: float  # the online probe's, likewise


def split_bn_groups(cfg: Config, world: int) -> int:
    """BatchNorm groups one process splits its batch into (1: plain BN): a method with split
    BN (config/methods.py) on a single process, the stand-in for shuffle-BN across GPUs."""
    if traits(cfg.method.name).split_bn and world == 1 and cfg.method.bn_splits > 1:
        return cfg.method.bn_splits
    return 1


def attention_group(cfg: Config, world: int, micro: int) -> int:
    """How many samples BatchFormer attends over together (bf.scope)."""
    if cfg.bf.scope == "global":
        return micro * world
    if cfg.bf.scope == "split":
        return micro // split_bn_groups(cfg, world)
    return micro


def make_plan(cfg: Config, world: int, images: int) -> Plan:
    """The step plan of a run on `world` processes over `images` pretraining images."""
    t = cfg.train
    if t.batch_size % (world * t.accumulate):
        raise UsageError(f"train.batch_size: {t.batch_size} does not divide into {world} "
                         f"processes x {t.accumulate} accumulation steps")
    if t.batch_size > images:
        raise UsageError(f"train.batch_size: {t.batch_size} is larger than the data set "
                         f"({images} images at {cfg.data.root})")
    micro = t.batch_size // (world * t.accumulate)
    # one process splits its batch into bn_splits groups (shuffle-BN's stand-in)
    if micro % split_bn_groups(cfg, world):
        raise UsageError(f"method.bn_splits: {cfg.method.bn_splits} does not divide the "
                         f"per-process batch {micro}")
    if cfg.bf.enabled and cfg.bf.mask_self and attention_group(cfg, world, micro) < 2:
        raise UsageError(f"bf.mask_self: BatchFormer attends over 1 sample at a time here "
                         f"(bf.scope={cfg.bf.scope}, per-process batch {micro}), so a sample "
                         f"that may not see itself sees nothing")
    spe = images // t.batch_size  # the last, partial batch of an epoch is dropped
    total = spe * t.epochs if t.max_steps is None else min(t.max_steps, spe * t.epochs)
    return Plan(spe, total, round(t.warmup_epochs * spe), round(cfg.bf.start_epoch * spe),
                scaled_lr(cfg), cfg.probe.lr * t.batch_size / 256)
