"""Backbones: torchvision ResNets (any width, CIFAR stem) and VisionTransformers.

Every backbone maps images (B, 3, H, W) to pooled features (B, dim) and keeps
torchvision's state-dict keys, so an exported backbone loads with strict=True
into `torchvision.models.resnet18/50` (fc = Identity, and the CIFAR stem where
used) or `torchvision.models.VisionTransformer` (heads = Identity).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from ssl_bf.config.derived import cifar_stem, resnet_planes, vit_depth, vit_patch_size
from ssl_bf.config.schema import ModelConfig

RESNETS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}
# (hidden_dim, heads, mlp_dim): DeiT-Tiny / DeiT-Small sizes, as MoCo-v3's vits.py
VITS = {"vit_tiny": (192, 3, 768), "vit_small": (384, 6, 1536)}


class ResNetTrunk(nn.Module):
    """torchvision's ResNet with a channel multiplier and an optional CIFAR stem.

    Written out (rather than torchvision.models.ResNet) because torchvision fixes
    the widths at 64..512; attribute names and init follow torchvision exactly.
    The CIFAR stem (3x3 conv, stride 1, no max-pool) is the standard one for
    32-px inputs (He et al. 2016 §4.2; the MoCo CIFAR demo).
    """

    def __init__(self, block, layers, width: float = 1.0, cifar_stem: bool = False,
                 zero_init_residual: bool = False):
        super().__init__()
        planes = resnet_planes(width)
        self.inplanes = planes[0]
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, planes[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, planes[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(block, planes[0], layers[0], 1)
        self.layer2 = self._stage(block, planes[1], layers[1], 2)
        self.layer3 = self._stage(block, planes[2], layers[2], 2)
        self.layer4 = self._stage(block, planes[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.dim = planes[3] * block.expansion
        self._init(zero_init_residual)

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        # torchvision's Bottleneck computes its inner width as planes * base_width / 64.
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init(self, zero_init_residual: bool) -> None:
        for m in self.modules():  # torchvision's ResNet init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # Goyal et al. 2017; MoCo-v3 builds ResNets this way
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def build_vit(cfg: ModelConfig, image_size: int) -> VisionTransformer:
    hidden, heads, mlp = VITS[cfg.backbone]
    vit = VisionTransformer(image_size=image_size, patch_size=vit_patch_size(cfg, image_size),
                            num_layers=vit_depth(cfg), num_heads=heads,
                            hidden_dim=hidden, mlp_dim=mlp)
    vit.heads = nn.Identity()  # forward then returns the class token after the last LN
    vit.dim = hidden
    if cfg.freeze_patch_embed:  # MoCo-v3 §4.2: a fixed random patch projection is stabler
        vit.conv_proj.requires_grad_(False)
    return vit


def build_backbone(cfg: ModelConfig, image_size: int) -> nn.Module:
    """A module with `.dim`, mapping (B, 3, S, S) images to (B, dim) features."""
    if cfg.backbone in RESNETS:
        block, layers = RESNETS[cfg.backbone]
        return ResNetTrunk(block, layers, cfg.width, cifar_stem(cfg, image_size),
                           cfg.zero_init_residual)
    return build_vit(cfg, image_size)
