"""What one augmented view is (ViewSpec, read off lightly's transform) and the per-image
parameters of a batch of views, drawn from counter-based uniforms (ssl_bf/data/counter_rng.py).

The distributions are torchvision's and lightly's, parameter by parameter:
RandomResizedCrop.get_params (area uniform in `scale`, log aspect ratio uniform in
log `ratio`, 10 attempts, then the centre-crop fallback), RandomHorizontalFlip,
RandomApply(ColorJitter) (each factor uniform in its range, the four in a uniformly
random order), RandomGrayscale, lightly's GaussianBlur (sigma uniform in `sigmas`) and
RandomSolarization.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from lightly.transforms.gaussian_blur import GaussianBlur
from lightly.transforms.solarize import RandomSolarization

CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params
# crop, flip, jitter (p, 4 factors, 4 order keys), grey, blur (p, sigma), solarize
DRAWS = CROP_ATTEMPTS * 4 + 1 + 9 + 1 + 2 + 1

Range = tuple[float, float]


@dataclass(frozen=True)
class ViewSpec:
    size: int
    scale: Range = (0.08, 1.0)
    ratio: Range = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.0
    # brightness, contrast, saturation, hue
    jitter: tuple[Range | None, ...] = (None, None, None, None)
    grey_p: float = 0.0
    blur_p: float = 0.0
    sigmas: Range = (0.1, 2.0)
    solarize_p: float = 0.0
    threshold: float = 128 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


def spec_from_lightly(view) -> ViewSpec:
    """The ViewSpec of one lightly view transform (e.g. MoCoV2Transform().transforms[0]).

    Steps are recognised by class name: lightly builds them from torchvision.transforms or
    torchvision.transforms.v2 depending on the version, with the same attributes.
    """
    fields: dict = {}
    for step in getattr(view, "transform", view).transforms:
        kind = type(step).__name__
        if kind == "RandomResizedCrop":
            fields.update(size=step.size[0], scale=tuple(step.scale), ratio=tuple(step.ratio))
        elif kind == "RandomHorizontalFlip":
            fields["flip_p"] = step.p
        elif kind == "RandomApply":
            (jitter,) = step.transforms
            fields.update(jitter_p=step.p, jitter=tuple(
                None if r is None else tuple(r)
                for r in (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)))
        elif kind == "RandomGrayscale":
            fields["grey_p"] = step.p
        elif isinstance(step, GaussianBlur):
            fields.update(blur_p=step.prob, sigmas=tuple(step.sigmas))
        elif isinstance(step, RandomSolarization):
            fields.update(solarize_p=step.prob, threshold=step.threshold / 255)
        elif kind == "Normalize":
            fields.update(mean=tuple(step.mean), std=tuple(step.std))
        elif kind in ("RandomVerticalFlip", "RandomRotate"):
            if getattr(step, "p", getattr(step, "prob", 0.0)) > 0:
                raise ValueError(f"batched views do not implement {kind}")
        elif kind != "ToTensor":
            raise ValueError(f"batched views do not implement {kind}")
    return ViewSpec(**fields)


@dataclass
class ViewParams:
    """Per-image parameters of B views; every field has B rows."""
    top: torch.Tensor  # crop box in the source image (int64)
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor  # bool
    jitter: torch.Tensor  # bool: colour jitter applied
    factors: torch.Tensor  # (B, 4): brightness, contrast, saturation, hue
    order: torch.Tensor  # (B, 4) int64: the order of the four jitter ops
    grey: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor


def _between(u: np.ndarray, r: Range) -> np.ndarray:
    return r[0] + u * (r[1] - r[0])


def crop_boxes(u: np.ndarray, height: np.ndarray, width: np.ndarray, scale: Range,
               ratio: Range) -> tuple[np.ndarray, ...]:
    """torchvision's RandomResizedCrop.get_params for B images at once.

    u: (B, 4 * CROP_ATTEMPTS) uniforms; height, width: (B,) source sizes. The first
    attempt whose box fits wins; where none does, the centre crop clamped to `ratio`.
    """
    u = u.reshape(len(u), CROP_ATTEMPTS, 4)
    h_img, w_img = height[:, None].astype(np.float64), width[:, None].astype(np.float64)
    area = h_img * w_img * _between(u[..., 0], scale)
    aspect = np.exp(_between(u[..., 1], (math.log(ratio[0]), math.log(ratio[1]))))
    w = np.round(np.sqrt(area * aspect))  # numpy rounds half to even, as Python's round()
    h = np.round(np.sqrt(area / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    top = np.floor(u[..., 2] * (h_img - h + 1))
    left = np.floor(u[..., 3] * (w_img - w + 1))
    first = fits.argmax(axis=1)
    rows = np.arange(len(u))
    box = [a[rows, first] for a in (top, left, h, w)]
    # fallback: the whole image, cut to the nearest allowed aspect ratio, centred
    in_ratio = width / height
    fb_w = np.where(in_ratio > ratio[1], np.round(height * ratio[1]), width).astype(np.float64)
    fb_h = np.where(in_ratio < ratio[0], np.round(width / ratio[0]), height).astype(np.float64)
    fallback = [(height - fb_h) // 2, (width - fb_w) // 2, fb_h, fb_w]
    none_fit = ~fits.any(axis=1)
    return tuple(np.where(none_fit, f, b).astype(np.int64) for b, f in zip(box, fallback))


def sample_params(spec: ViewSpec, u: np.ndarray, height: np.ndarray,
                  width: np.ndarray) -> ViewParams:
    """ViewParams from (B, DRAWS) uniforms; height, width: (B,) source image sizes."""
    c = CROP_ATTEMPTS * 4
    top, left, h, w = crop_boxes(u[:, :c], height, width, spec.scale, spec.ratio)
    factors = np.ones((len(u), 4))
    factors[:, 3] = 0.0  # hue is a shift
    for k, r in enumerate(spec.jitter):
        if r is not None:
            factors[:, k] = _between(u[:, c + 2 + k], r)
    present = np.array([r is not None for r in spec.jitter])
    jitter = (u[:, c + 1] < spec.jitter_p) & present.any()
    t = torch.from_numpy
    return ViewParams(
        top=t(top), left=t(left), height=t(h), width=t(w),
        flip=t(u[:, c] < spec.flip_p), jitter=t(jitter),
        factors=t(factors).float(), order=t(np.argsort(u[:, c + 6:c + 10], axis=1)),
        grey=t(u[:, c + 10] < spec.grey_p),
        blur=t(u[:, c + 11] < spec.blur_p), sigma=t(_between(u[:, c + 12], spec.sigmas)).float(),
        solarize=t(u[:, c + 13] < spec.solarize_p))
