"""Optimizers and their parameter groups.

lr = train.lr * global batch / 256 (Goyal et al. 2017's linear scaling, as both
MoCo codes do). Groups: weights; BN parameters and biases (no weight decay and,
under LARS, no trust-ratio scaling when train.exclude_norm_bias - MoCo-v3's
optimizer.py exempts every 1-D tensor, BatchFormer's LayerNorms and biases
included); BatchFormer (lr * bf.lr_scale), its 1-D tensors exempt likewise.
Each group keeps an `lr_scale` that the per-step schedule multiplies in. Frozen
parameters (the key encoder, a fixed BatchFormer) are left out.
"""
from __future__ import annotations

import torch

from ssl_bf.config.derived import scaled_lr
from ssl_bf.config.schema import Config
from ssl_bf.methods.base import Method
from ssl_bf.training.lars import LARS

# (role, exempt from weight decay and LARS scaling) -> the optimizer group
GROUP = {("encoder", False): "weights", ("encoder", True): "norm_bias",
         ("batchformer", False): "batchformer", ("batchformer", True): "batchformer_norm_bias"}


def param_groups(cfg: Config, method: Method) -> list[dict]:
    """The optimizer's groups from the method's parameter roles (methods/base.py)."""
    t = cfg.train
    buckets: dict[str, list] = {"weights": [], "norm_bias": [], "batchformer": [],
                                "batchformer_norm_bias": []}
    for role, params in method.param_roles().items():
        for p in params:
            exempt = t.exclude_norm_bias and p.ndim <= 1
            buckets[GROUP[role, exempt]].append(p)
    settings = {"weights": (1.0, t.weight_decay),
                "norm_bias": (1.0, 0.0),
                "batchformer": (cfg.bf.lr_scale, t.weight_decay),
                "batchformer_norm_bias": (cfg.bf.lr_scale, 0.0)}
    return [{"params": ps, "name": n, "lr_scale": settings[n][0], "weight_decay": settings[n][1]}
            for n, ps in buckets.items() if ps]


def build_optimizer(cfg: Config, method: Method) -> torch.optim.Optimizer:
    t, groups, lr = cfg.train, param_groups(cfg, method), scaled_lr(cfg)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=t.sgd_momentum, weight_decay=t.weight_decay)
    if t.optimizer == "lars":
        # lightly's LARS update, sync-free (training/lars.py); groups with weight_decay 0
        # skip trust-ratio scaling, which is MoCo-v3's exclusion of BN and bias parameters.
        return LARS(groups, lr=lr, momentum=t.sgd_momentum, weight_decay=t.weight_decay,
                    trust_coefficient=t.lars_eta)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(t.betas), weight_decay=t.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
