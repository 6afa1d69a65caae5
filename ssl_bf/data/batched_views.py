"""Augmented views of a uint8 image batch, made on the training device (`aug.batched`).

The loader hands over decoded uint8 images; each view is then a handful of batched
tensor ops with per-image parameters (ssl_bf/data/batched_ops.py) in lightly's order:
crop+resize+flip, colour jitter (p), greyscale (p), Gaussian blur (p), solarize (p),
normalise. Parameters come from counter-based uniforms keyed by (seed, epoch, view,
image index), so the views of an image do not depend on its batch, the worker count,
the number of processes or a resume.
"""
from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

from ssl_bf.data import batched_ops as ops
from ssl_bf.data.counter_rng import stream_base, uniforms
from ssl_bf.data.view_params import DRAWS, ViewParams, ViewSpec, sample_params, spec_from_lightly


def view_params(spec: ViewSpec, seed: int, epoch: int, view: int, index: torch.Tensor,
                height: int, width: int) -> ViewParams:
    """The parameters of view `view` of the images `index` (a pure function of its inputs)."""
    u = uniforms(stream_base(seed, epoch, view), index, DRAWS)
    size = torch.full((len(u),), height, dtype=torch.long, device=u.device)
    return sample_params(spec, u, size, size if width == height else torch.full_like(size, width))


def apply_view(images: torch.Tensor, p: ViewParams, spec: ViewSpec,
               cropped: bool = False) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, H, W) -> the normalised float (B, 3, size, size) view;
    `cropped`: the images are already each view's crop (crop_views)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if cropped:  # the crop was cut in the loader: only the flip is left (the resize would be
        # the identity)
        x = torch.where(p.flip.view(-1, 1, 1, 1), x.flip(3), x)
    else:
        x = ops.resized_crop(x, p.top, p.left, p.height, p.width, p.flip, spec.size)
    x = ops.colour_jitter(x, p.factors, p.order, p.jitter)
    x = ops.where_rows(p.grey, lambda t: ops.grey(t).expand(-1, 3, -1, -1), x)
    if spec.blur_p > 0:
        kernel = ops.blur_kernel_size(spec.sigmas[1], spec.size)
        x = ops.where_rows(p.blur, ops.gaussian_blur, x, p.sigma, kernel)
    x = ops.where_rows(p.solarize, ops.solarize, x, spec.threshold)
    return ops.normalise(x, spec.mean, spec.std)


class BatchedViews:
    """(uint8 (B, 3, H, W) images, (B,) indices, epoch) -> [one view per spec], on the images'
    device."""

    def __init__(self, specs: tuple[ViewSpec, ...], seed: int):
        self.specs, self.seed = specs, seed

    @classmethod
    def from_lightly(cls, transform, seed: int) -> "BatchedViews":
        """The views of a lightly multi-view transform (MoCoV2Transform, BYOLTransform)."""
        return cls(tuple(spec_from_lightly(view) for view in transform.transforms), seed)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, index: torch.Tensor, epoch: int) -> list[torch.Tensor]:
        """images: uint8 (B, 3, H, W), or (B, V, 3, S, S) crops already cut by crop_views."""
        views = []
        for v, spec in enumerate(self.specs):
            x = images if images.dim() == 4 else images[:, v]
            p = view_params(spec, self.seed, epoch, v, index.to(images.device, non_blocking=True),
                            x.shape[2], x.shape[3])
            views.append(apply_view(x, p, spec, cropped=images.dim() == 5))
        return views


def crop_views(image: torch.Tensor, views: BatchedViews, epoch: int, index: int) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (V, 3, S, S): each view's random resized crop of one image of
    any size, with the parameters BatchedViews would draw for it (torchvision's
    resized_crop, bilinear, antialiased); the rest of each view is made on the device."""
    _, h, w = image.shape
    crops = []
    for v, spec in enumerate(views.specs):
        p = view_params(spec, views.seed, epoch, v, torch.tensor([index]), h, w)  # host: one image
        crops.append(TF.resized_crop(image, int(p.top[0]), int(p.left[0]), int(p.height[0]),
                                     int(p.width[0]), [spec.size, spec.size], antialias=True))
    return torch.stack(crops)
