"""Backbone shapes, and that exports load strictly into plain torchvision models."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from ssl_bf.config import load_config
from ssl_bf.config.derived import backbone_dim
from ssl_bf.config.schema import ModelConfig
from ssl_bf.errors import UsageError
from ssl_bf.models.backbones import build_backbone


@pytest.mark.parametrize("name, width, size, dim", [
    ("resnet18", 1.0, 32, 512), ("resnet18", 0.25, 32, 128), ("resnet50", 0.25, 64, 512),
    ("resnet18", 1.0, 96, 512), ("vit_tiny", 1.0, 32, 192), ("vit_small", 1.0, 32, 384),
])
def test_features_have_the_declared_dimension(name, width, size, dim):
    cfg = ModelConfig(backbone=name, width=width, vit_depth=2 if name.startswith("vit") else None)
    net = build_backbone(cfg, size).eval()
    assert net.dim == dim
    with torch.no_grad():
        assert net(torch.randn(2, 3, size, size)).shape == (2, dim)


def test_cifar_stem_is_auto_for_small_images():
    small = build_backbone(ModelConfig(), 32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    large = build_backbone(ModelConfig(), 224)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)


def tv_cifar_resnet18() -> nn.Module:
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def test_resnet_state_dict_loads_strictly_into_torchvision():
    ours = build_backbone(ModelConfig(backbone="resnet18"), 32).eval()
    theirs = tv_cifar_resnet18().eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    r50 = torchvision.models.resnet50()
    r50.fc = nn.Identity()
    r50.load_state_dict(build_backbone(ModelConfig(backbone="resnet50"), 224).state_dict(),
                        strict=True)


def test_vit_state_dict_loads_strictly_into_torchvision():
    ours = build_backbone(ModelConfig(backbone="vit_tiny", vit_depth=2), 32).eval()
    theirs = torchvision.models.VisionTransformer(32, 4, 2, 3, 192, 768)
    theirs.heads = nn.Identity()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs.eval()(x), atol=1e-5)


def test_zero_init_residual_and_frozen_patch_embedding():
    net = build_backbone(ModelConfig(zero_init_residual=True), 32)
    assert net.layer1[0].bn2.weight.abs().sum() == 0
    vit = build_backbone(ModelConfig(backbone="vit_tiny", vit_depth=1, freeze_patch_embed=True), 32)
    assert not vit.conv_proj.weight.requires_grad


def test_bad_patch_size_and_vit_width_are_usage_errors():
    """Checked by the config's validation, before any model is built."""
    with pytest.raises(UsageError, match="model.patch_size: 5 does not divide"):
        load_config(["model.backbone=vit_tiny", "model.patch_size=5"])
    with pytest.raises(UsageError, match="model.width: only ResNets"):
        load_config(["model.backbone=vit_tiny", "model.width=0.5"])


@pytest.mark.parametrize("backbone, width", [("resnet18", 1.0), ("resnet18", 0.25),
                                             ("resnet18", 0.3), ("resnet50", 0.125),
                                             ("vit_tiny", 1.0), ("vit_small", 1.0)])
def test_static_feature_width_is_what_the_backbone_outputs(backbone, width):
    """config/derived.backbone_dim (used by validation) against the built module."""
    cfg = ModelConfig(backbone=backbone, width=width, vit_depth=1)
    net = build_backbone(cfg, 32)
    assert backbone_dim(cfg) == net.dim == net(torch.zeros(2, 3, 32, 32)).shape[1]
