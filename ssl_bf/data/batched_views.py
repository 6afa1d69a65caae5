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
import torch.nn.functional as F

from ssl_bf.data import batched_ops as ops
from ssl_bf.data.counter_rng import stream_base, uniforms
from ssl_bf.data.view_params import (
    CROP_DRAWS,
    DRAWS,
    ViewParams,
    ViewSpec,
    crop_boxes,
    sample_params,
    spec_from_lightly,
)


def view_params(spec: ViewSpec, seed: int, epoch: int, view: int, index: torch.Tensor,
                height: int, width: int) -> ViewParams:
    """The parameters of view `view` of the images `index` (a pure function of its inputs)."""
    u = uniforms(stream_base(seed, epoch, view), index, DRAWS)
    size = torch.full((len(u),), height, dtype=torch.long, device=u.device)
    return sample_params(spec, u, size, size if width == height else torch.full_like(size, width))


def apply_view(images: torch.Tensor, p: ViewParams, spec: ViewSpec,
               cropped: bool = False) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, H, W) -> the normalised float (B, 3, size, size) view;
    `cropped`: the images are already each view's crop (ViewCrops)."""
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
        """images: uint8 (B, 3, H, W), or (B, V, 3, S, S) crops already cut by ViewCrops."""
        views = []
        for v, spec in enumerate(self.specs):
            x = images if images.dim() == 4 else images[:, v]
            p = view_params(spec, self.seed, epoch, v, index.to(images.device, non_blocking=True),
                            x.shape[2], x.shape[3])
            views.append(apply_view(x, p, spec, cropped=images.dim() == 5))
        return views


Box = tuple[int, int, int, int]  # top, left, height, width


def loader_boxes(views: BatchedViews, epoch: int, index: list[int],
                 sizes: list[tuple[int, int]]) -> list[list[Box]]:
    """Each image's crop box for each view: view_params' boxes, drawing only the crop's
    numbers, for a batch of images of sizes (h, w) at once - a call costs ~1 ms of small
    tensor ops on the host whatever its length, so a loader draws per batch (BENCHMARKS §11)."""
    index_t = torch.tensor(index)
    h, w = (torch.tensor([s[k] for s in sizes]) for k in (0, 1))
    per_view = []
    for v, spec in enumerate(views.specs):
        u = uniforms(stream_base(views.seed, epoch, v), index_t, DRAWS)
        per_view.append(torch.stack(crop_boxes(u[:, :CROP_DRAWS], h, w, spec.scale,
                                               spec.ratio), dim=1).tolist())
    return [[tuple(boxes[i]) for boxes in per_view] for i in range(len(index))]


# libjpeg's DCT scaling decodes at 1/2, 1/4 or 1/8 of the stored size (PIL's Image.draft).
MAX_REDUCTION = 8


class ViewCrops:
    """Each view's random resized crop of one image of any size, cut in the loader: the boxes
    BatchedViews would draw for (epoch, index), resized by torchvision's resized_crop (bilinear,
    antialiased); the rest of each view is made on the device.

    `reduction(h, w)` is asked with a file's stored size before it is decoded: the largest
    power-of-two reduction at which every box still spans at least its output size, so a JPEG
    can be decoded that much smaller (DCT scaling) and the crops are then only resized down or
    kept, as from the full image (at ImageNet's ~500 x 375 a 224-px crop never allows it; at
    twice that size most do: benchmarks/BENCHMARKS.md §11). Images given whole (in memory,
    or formats without DCT scaling) are cut as they are.
    """

    def __init__(self, views: BatchedViews, epoch: int, index: int,
                 known: tuple[tuple[int, int], list[Box]] | None = None):
        """`known`: the boxes for one image size, drawn already (loader_boxes)."""
        self.views, self.epoch, self.index = views, epoch, index
        self.stored: tuple[int, int] | None = None  # (h, w) as stored, when reduction() saw it
        self._boxes = known

    def boxes(self, h: int, w: int) -> list[Box]:
        """(top, left, height, width) of each view's crop of an h x w image."""
        if self._boxes is None or self._boxes[0] != (h, w):
            self._boxes = ((h, w), loader_boxes(self.views, self.epoch, [self.index],
                                                [(h, w)])[0])
        return self._boxes[1]

    def reduction(self, h: int, w: int) -> int:
        self.stored = (h, w)
        room = min(min(bh, bw) / spec.size
                   for (_, _, bh, bw), spec in zip(self.boxes(h, w), self.views.specs))
        r = 1
        while r * 2 <= min(room, MAX_REDUCTION):
            r *= 2
        return r

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, h, w) of any strides, the stored image or its reduced decode -> uint8
        (V, 3, S, S)."""
        _, h, w = image.shape
        stored_h, stored_w = self.stored or (h, w)
        sy, sx = h / stored_h, w / stored_w  # 1, or about 1/r after a reduced decode
        crops = []
        for (top, left, bh, bw), spec in zip(self.boxes(stored_h, stored_w), self.views.specs):
            t, lf = min(h - 1, round(top * sy)), min(w - 1, round(left * sx))
            box = image[None, :, t:t + max(1, min(h - t, round(bh * sy))),
                        lf:lf + max(1, min(w - lf, round(bw * sx)))]
            # torchvision's resized_crop(..., antialias=True) to the bit; on an image in HWC
            # memory (as decoded) torch takes its uint8 channels-last kernel, ~4x faster
            # than on CHW (BENCHMARKS §11)
            crops.append(F.interpolate(box, size=(spec.size, spec.size), mode="bilinear",
                                       antialias=True, align_corners=False))
        return torch.cat(crops).contiguous()
