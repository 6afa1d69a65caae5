"""Split BatchNorm: one process imitating the per-GPU BatchNorm of shuffle-BN.

MoCo's keys must not share BatchNorm statistics with their queries' batch
(He et al. 2020 §3.3): on several GPUs shuffle-BN does this; on one device the
official CIFAR demo splits the batch into groups that are normalised apart.
lightly's SplitBatchNorm stores running stats of size C*splits, which changes
the state-dict shapes; this one keeps BatchNorm2d's names and shapes, so a
backbone trained with it loads strictly into plain torchvision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm2d(nn.Module):
    """BatchNorm2d whose training statistics are taken over `splits` sub-batches.

    Shapes: (N, C, H, W) -> (N, C, H, W), or (N, C) -> (N, C) in place of a BatchNorm1d (a
    projection head's); N must be divisible by `splits`. In eval mode it is an ordinary
    BatchNorm with the averaged running stats.
    """

    def __init__(self, bn: nn.BatchNorm2d, splits: int):
        super().__init__()
        self.splits, self.eps, self.momentum = splits, bn.eps, bn.momentum
        self.num_features = bn.num_features
        self.weight = nn.Parameter(bn.weight.detach().clone(),
                                   requires_grad=bn.weight.requires_grad)
        self.bias = nn.Parameter(bn.bias.detach().clone(), requires_grad=bn.bias.requires_grad)
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        n, g = x.shape[0], self.splits
        if n % g:
            raise ValueError(f"SplitBatchNorm2d: batch {n} is not divisible by {g} splits")
        # One batch_norm call per contiguous sub-batch: chunk() is a view in either memory
        # format, so the only copy is the output's cat. (Regrouping to (N/g, g*C, H, W) costs
        # a transpose-copy of input and output: 13% of a quarter-width MoCo-v2 step on CPU,
        # benchmarks/results/speed.md.)
        outs, means, variances = [], [], []
        for chunk in x.chunk(g):
            mean, var = self.running_mean.clone(), self.running_var.clone()
            outs.append(F.batch_norm(chunk, mean, var, self.weight, self.bias, True,
                                     self.momentum, self.eps))
            means.append(mean)
            variances.append(var)
        with torch.no_grad():  # keep one running average: the mean over the groups
            self.running_mean.copy_(torch.stack(means).mean(0))
            self.running_var.copy_(torch.stack(variances).mean(0))
            self.num_batches_tracked.add_(1)
        return torch.cat(outs)


def convert_split_bn(module: nn.Module, splits: int,
                     kinds: tuple[type, ...] = (nn.BatchNorm2d,)) -> nn.Module:
    """Replace every BatchNorm of `kinds` inside `module` (in place) by a SplitBatchNorm2d."""
    for name, child in module.named_children():
        if isinstance(child, kinds):
            setattr(module, name, SplitBatchNorm2d(child, splits))
        else:
            convert_split_bn(child, splits, kinds)
    return module
