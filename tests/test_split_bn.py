"""SplitBatchNorm2d against a naive reference: BatchNorm run on each group alone."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ssl_bf.split_bn import SplitBatchNorm2d, convert_split_bn


def test_each_group_is_normalised_alone_and_running_stats_average():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    nn.init.uniform_(bn.weight)
    nn.init.uniform_(bn.bias)
    split = SplitBatchNorm2d(copy.deepcopy(bn), splits=4)
    x = torch.randn(8, 3, 5, 5) * 3 + torch.arange(8.0)[:, None, None, None]
    out = split(x)
    refs = [copy.deepcopy(bn) for _ in range(4)]
    expected = torch.cat([ref(x[2 * g:2 * g + 2]) for g, ref in enumerate(refs)])
    assert torch.allclose(out, expected, atol=1e-5)
    mean = torch.stack([r.running_mean for r in refs]).mean(0)
    var = torch.stack([r.running_var for r in refs]).mean(0)
    assert torch.allclose(split.running_mean, mean, atol=1e-6)
    assert torch.allclose(split.running_var, var, atol=1e-6)


def test_eval_mode_is_plain_batchnorm_and_keys_are_unchanged():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    keys = set(net.state_dict())
    converted = convert_split_bn(copy.deepcopy(net), 2)
    assert isinstance(converted[1], SplitBatchNorm2d)
    assert set(converted.state_dict()) == keys
    x = torch.randn(4, 3, 6, 6)
    assert torch.allclose(converted.eval()(x), net.eval()(x), atol=1e-6)
    gradient_check = SplitBatchNorm2d(nn.BatchNorm2d(2), 2)
    gradient_check(torch.randn(4, 2, 3, 3)).sum().backward()
    assert gradient_check.weight.grad is not None
