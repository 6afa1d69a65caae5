"""SplitBatchNorm2d against a naive reference: BatchNorm run on each group alone."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ssl_bf.models.split_bn import SplitBatchNorm2d, convert_split_bn


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

def test_gradients_equal_separate_batchnorms_on_each_half():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    split, halves = SplitBatchNorm2d(copy.deepcopy(bn), 2), [copy.deepcopy(bn) for _ in range(2)]
    x = torch.randn(8, 3, 4, 4)
    probe = torch.randn(8, 3, 4, 4)  # a loss whose gradient is not trivially zero
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    (split(xs) * probe).sum().backward()
    (torch.cat([m(h) for m, h in zip(halves, xr.chunk(2))]) * probe).sum().backward()
    assert torch.allclose(xs.grad, xr.grad, atol=1e-5)
    assert torch.allclose(split.weight.grad, halves[0].weight.grad + halves[1].weight.grad,
                          atol=1e-5)
    assert torch.allclose(split.bias.grad, halves[0].bias.grad + halves[1].bias.grad, atol=1e-5)
