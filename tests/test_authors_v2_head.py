"""method.proj_bn / proj_layers: the BatchFormer authors' MoCo-v2 head (zhihou7/BatchFormer
builder_v2.py L54-64: with BatchFormer, the layer then Linear-BN-ReLU twice, then the fc),
against a reference run the way their code runs on several GPUs - each device's head, its
BatchNorm included, sees that device's plain rows and its BatchFormer rows, nothing else."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead
from test_bf_authors import TheirDecorator, assert_close, grads, make, their_v2_loss, views
from torch import nn

from ssl_bf.config import load_config
from ssl_bf.errors import UsageError
from ssl_bf.models.heads import mocov2_projector
from ssl_bf.models.split_bn import SplitBatchNorm2d

HEAD = ["method.proj_bn=true", "method.proj_layers=3", "bf.dropout=0.0"]


def their_head(ours: nn.Module) -> nn.Sequential:
    """Their head with our weights: their Linears have biases (random here - before a BN a bias
    cancels, so ours has none), their BatchNorms are plain nn.BatchNorm1d."""
    mods = []
    for m in ours.modules():
        if isinstance(m, nn.Linear):
            mods.append(nn.Linear(m.in_features, m.out_features))
            with torch.no_grad():
                mods[-1].weight.copy_(m.weight)
                if m.bias is not None:
                    mods[-1].bias.copy_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, SplitBatchNorm2d)):
            mods.append(nn.BatchNorm1d(m.num_features))
            with torch.no_grad():
                mods[-1].weight.copy_(m.weight)
                mods[-1].bias.copy_(m.bias)
        elif isinstance(m, nn.ReLU):
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def per_device(backbone, layer, head, x, devices):
    """Each device: its chunk's features h, cat([h, BF(h)]) (their decorator), its own head;
    the results gathered as [every plain row; every BatchFormer row]. Our backbone's split BN
    already takes per-chunk statistics, so it runs on the whole batch."""
    outs = [head(layer(h)) for h in backbone(x).chunk(devices)]
    return torch.cat([o[: len(o) // 2] for o in outs] + [o[len(o) // 2:] for o in outs])


@pytest.mark.parametrize("devices", [1, 2, 4])
def test_their_v2_head_equals_their_forward_per_device(devices):
    cfg, m = make("mocov2_bf_authors", *HEAD, f"method.bn_splits={devices}")
    x1, x2 = views()
    queue = m.queue.keys.clone()
    torch.manual_seed(11)
    perm = torch.randperm(len(x2)) if devices > 1 else torch.arange(len(x2))
    layer = TheirDecorator(m.query.bf.encoder.layers[0])
    head_q, head_k = their_head(m.query.projector), their_head(m.key.projector)
    q = F.normalize(per_device(m.query.backbone, layer, head_q, x1, devices), dim=1)
    with torch.no_grad():
        k = F.normalize(per_device(m.key.backbone, layer, head_k, x2[perm], devices), dim=1)
        back = torch.argsort(perm)
        k = torch.cat([s[back] for s in k.chunk(2)])
    ref = their_v2_loss(q, k, queue, cfg)
    ref.backward()
    theirs_bf, theirs_head = grads(layer), grads(nn.ModuleList(
        [mod for mod in head_q if isinstance(mod, nn.BatchNorm1d)]))
    m.zero_grad()  # the reference ran through our backbone
    torch.manual_seed(11)
    out = m([x1, x2])
    out.loss.backward()
    assert abs(out.loss.item() - ref.item()) < 1e-5 * ref.item()
    assert_close(grads(m.query.bf), theirs_bf)
    ours_bn = [mod for mod in m.query.projector.modules() if hasattr(mod, "running_var")]
    assert len(ours_bn) == 2  # BN after both hidden Linears, none at the output
    assert_close(grads(nn.ModuleList(ours_bn)), theirs_head)
    assert torch.allclose(m.queue.keys[:32], k, atol=1e-5)


def test_default_head_is_lightlys_mocov2_head_and_bn_head_is_theirs():
    torch.manual_seed(0)
    lightly_head = MoCoProjectionHead(32, 48, 16)
    torch.manual_seed(0)
    ours = mocov2_projector(32, 48, 16)
    x = torch.randn(8, 32)
    assert torch.equal(ours(x), lightly_head(x))  # same blocks, same initialisation
    kinds = [type(mod).__name__ for mod in mocov2_projector(32, None, 16, 3, True).layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    assert mocov2_projector(32, None, 16, 3, True).layers[0].out_features == 32  # hidden = input


def test_proj_bn_is_mocov2_only():
    with pytest.raises(UsageError, match="method.proj_bn: MoCo-v2 only"):
        load_config(["recipe=mocov3", "method.proj_bn=true"])
