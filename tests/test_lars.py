"""ssl_bf's LARS (training/lars.py) against lightly's, which the MoCo-v3 conformance rests on,
and against the update written out by hand; and it runs on the meta device, where any host
sync (a norm compared on the host) would raise."""
from __future__ import annotations

import copy

import torch
from lightly.utils.lars import LARS as LightlyLARS

from ssl_bf.config import load_config
from ssl_bf.methods import build_method
from ssl_bf.training.lars import LARS
from ssl_bf.training.optim import param_groups

# the recipe's 4096-wide heads: large tensors, where a norm's summation order shows
SMALL = ["model.width=0.125"]


def test_equals_lightlys_lars_to_the_bit_over_steps_of_a_real_method():
    cfg = load_config(["recipe=mocov3_bf", *SMALL])
    torch.manual_seed(0)
    theirs_model = build_method(cfg).to(memory_format=torch.channels_last)  # as trained
    ours_model = copy.deepcopy(theirs_model)
    with torch.no_grad():  # a weight of zero norm: the exemption from scaling and decay
        for m in (theirs_model, ours_model):
            m.query.projector.layers[0].weight.zero_()
    kw = dict(lr=0.3, momentum=0.9, weight_decay=1e-6, trust_coefficient=0.02)
    theirs = LightlyLARS(param_groups(cfg, theirs_model), **kw)
    ours = LARS(param_groups(cfg, ours_model), **kw)
    g = torch.Generator().manual_seed(1)
    for step in range(3):
        views = [torch.randn(16, 3, 32, 32, generator=g) for _ in range(2)]
        for model, opt in ((theirs_model, theirs), (ours_model, ours)):
            torch.manual_seed(step)
            opt.zero_grad()
            model(views).loss.backward()
            opt.step()
        for a, b in zip(theirs_model.parameters(), ours_model.parameters()):
            assert torch.equal(a, b)


def test_one_step_by_hand():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # |p| = 5
    still = torch.nn.Parameter(torch.zeros(2))  # |p| = 0: plain momentum step
    p.grad, still.grad = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])  # |g| = 1
    opt = LARS([p, still], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.02)
    opt.step()
    ratio = 0.02 * 5.0 / (1.0 + 0.1 * 5.0 + 1e-8)
    d = (torch.tensor([0.0, 1.0]) + 0.1 * torch.tensor([3.0, 4.0])) * ratio
    assert torch.allclose(p.detach(), torch.tensor([3.0, 4.0]) - 0.5 * d)
    assert torch.equal(still.detach(), torch.tensor([-0.5, -0.5]))


def test_runs_on_the_meta_device_so_it_never_syncs():
    params = [torch.nn.Parameter(torch.empty(64, 32, device="meta")),
              torch.nn.Parameter(torch.empty(32, device="meta"))]
    for p in params:
        p.grad = torch.empty_like(p)
    opt = LARS([{"params": params[:1], "weight_decay": 1e-6}, {"params": params[1:],
                                                                "weight_decay": 0.0}],
               lr=0.1, momentum=0.9, trust_coefficient=0.02)
    for _ in range(2):  # the first step makes the buffers, the second uses them
        opt.step()
    assert params[0].device.type == "meta"
