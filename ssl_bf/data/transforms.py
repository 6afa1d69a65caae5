"""Augmentations, from lightly, sized by data.image_size.

MoCo-v2: lightly's MoCoV2Transform (Chen et al. 2020: crop, jitter 0.4/0.4/0.4/0.1
at p=0.8, grey 0.2, blur p=0.5, flip). MoCo-v3: BYOL's asymmetric pair
(Grill et al. 2020 / MoCo-v3 main_moco.py: blur p=1.0 and 0.1, solarize p=0 and
0.2). `aug.blur=false` / `aug.solarize=false` drop those, as the CIFAR recipes of
the official MoCo demo and solo-learn do for 32-px images.
"""
from __future__ import annotations

from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    MoCoV2Transform,
)
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torchvision import transforms as T

from ssl_bf.config.methods import traits
from ssl_bf.config.schema import AugConfig


def pretrain_transform(method: str, size: int, aug: AugConfig):
    """PIL image -> [view1, view2] float tensors (3, size, size)."""
    common = dict(input_size=size, min_scale=aug.min_scale, cj_strength=aug.cj_strength)
    if traits(method).views == "mocov2":
        return MoCoV2Transform(gaussian_blur=0.5 if aug.blur else 0.0, **common)
    return BYOLTransform(
        BYOLView1Transform(gaussian_blur=1.0 if aug.blur else 0.0, solarization_prob=0.0, **common),
        BYOLView2Transform(gaussian_blur=0.1 if aug.blur else 0.0,
                           solarization_prob=0.2 if aug.solarize else 0.0, **common))


def eval_transform(size: int, native_size: int | None):
    """Deterministic: as is at native size, else resize (+ the standard 0.875 centre crop)."""
    steps = []
    if native_size is None:  # mixed sizes (ImageNet-style): resize 256 -> crop 224 at 224
        steps += [T.Resize(round(size / 0.875)), T.CenterCrop(size)]
    elif native_size != size:
        steps += [T.Resize((size, size))]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"])]
    return T.Compose(steps)
