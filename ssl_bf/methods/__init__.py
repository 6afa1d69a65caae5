"""Methods: MoCo-v2 and MoCo-v3, each with an optional BatchFormer stream, built from a Config.

The config is translated into each method's plain settings here and nowhere else; the
methods themselves take a backbone, their settings and the bf section (methods/base.py has
the contract they keep).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ssl_bf.config.derived import split_bn_groups
from ssl_bf.config.methods import METHODS
from ssl_bf.config.schema import Config
from ssl_bf.methods.base import Method, StepOutput
from ssl_bf.methods.moco_v2 import MoCoV2, MoCoV2Settings
from ssl_bf.methods.moco_v3 import MoCoV3, MoCoV3Settings
from ssl_bf.models.backbones import build_backbone


def _mocov2(cfg: Config, backbone: nn.Module, world_size: int) -> MoCoV2:
    m, groups = cfg.method, split_bn_groups(cfg, world_size)
    settings = MoCoV2Settings(temperature=m.temperature, queue_size=m.queue_size,
                              symmetric=m.symmetric, split_groups=groups,
                              shuffle_bn=world_size > 1 or groups > 1,
                              proj_hidden=m.proj_hidden, proj_out=m.proj_out,
                              proj_layers=m.proj_layers, proj_bn=m.proj_bn)
    return MoCoV2(backbone, settings, cfg.bf)


def _mocov3(cfg: Config, backbone: nn.Module, world_size: int) -> MoCoV3:
    m = cfg.method
    settings = MoCoV3Settings(temperature=m.temperature, proj_hidden=m.proj_hidden,
                              proj_out=m.proj_out, proj_layers=m.proj_layers,
                              pred_hidden=m.pred_hidden,
                              global_batch=cfg.train.batch_size // cfg.train.accumulate)
    return MoCoV3(backbone, settings, cfg.bf)


BUILDERS: dict[str, Callable[[Config, nn.Module, int], Method]] = {
    "mocov2": _mocov2,
    "mocov3": _mocov3,
}
if BUILDERS.keys() != METHODS.keys():  # config/methods.py is the one list of names
    raise ImportError(f"methods built {sorted(BUILDERS)} but config/methods.py registers "
                      f"{sorted(METHODS)}")


def build_method(cfg: Config, world_size: int = 1) -> Method:
    """The training module of a config (forward(views, bf_on) -> StepOutput)."""
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    return BUILDERS[cfg.method.name](cfg, backbone, world_size)


__all__ = ["BUILDERS", "Method", "MoCoV2", "MoCoV2Settings", "MoCoV3", "MoCoV3Settings",
           "StepOutput", "build_method"]
