"""LARS (You, Gitman, Ginsburg 2017) as MoCo-v3 uses it, in foreach ops with no host sync.

The update is lightly's LARS (lightly/utils/lars.py), which equals the official MoCo-v3
optimizer.py: for a group with weight decay, each tensor's step is
    d = (g + wd·p) · eta·|p| / (|g| + wd·|p| + eps)   where |p| and |g| are both non-zero,
    d = g                                               otherwise,
then SGD momentum (no dampening) and p -= lr·buf; a group without weight decay (BatchNorm and
biases under train.exclude_norm_bias) takes the plain momentum step. lightly tests
`p_norm != 0 and g_norm != 0` on the host for every tensor - two GPU->CPU syncs each, ~60 a
ResNet-18 step; here that test is a device-side mask, so the step never waits on the GPU, and
the result equals lightly's to the bit (tests/test_lars.py).
"""
from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        d = [p.grad for p in params]
        wd = group["weight_decay"]
        if wd != 0:
            p_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(d))
            ok = (p_norm != 0) & (g_norm != 0)
            # lightly's order of operations, so that the result is the same to the bit
            ratio = p_norm / (g_norm + p_norm * wd + group["eps"]) * group["trust_coefficient"]
            # where a norm is zero lightly steps with g alone: g + wd·p is g when p = 0, and
            # is cancelled by a scale of 0 when g = 0
            scale = torch.where(ok, ratio, (g_norm != 0).to(ratio.dtype))
            d = torch._foreach_add(d, params, alpha=wd)
            torch._foreach_mul_(d, list(scale.unbind()))
        momentum = group["momentum"]
        if momentum != 0:
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            if any(b is None for b in bufs):  # the first step: the buffer is the step itself
                for p, x in zip(params, d):
                    self.state[p]["momentum_buffer"] = x.clone().detach()
            else:
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, d)
            d = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_add_(params, d, alpha=-group["lr"])
