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

import torch
from lightly.transforms.gaussian_blur import GaussianBlur
from lightly.transforms.solarize import RandomSolarization

CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params
CROP_DRAWS = CROP_ATTEMPTS * 4  # the first draws of a view: its crop box's
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


def _between(u: torch.Tensor, r: Range) -> torch.Tensor:
    return r[0] + u * (r[1] - r[0])


def crop_boxes(u: torch.Tensor, height: torch.Tensor, width: torch.Tensor, scale: Range,
               ratio: Range) -> tuple[torch.Tensor, ...]:
    """torchvision's RandomResizedCrop.get_params for B images at once, on u's device.

    u: (B, 4 * CROP_ATTEMPTS) float64 uniforms; height, width: (B,) source sizes. The first
    attempt whose box fits wins; where none does, the centre crop clamped to `ratio`.
    """
    u = u.reshape(len(u), CROP_ATTEMPTS, 4)
    h_img, w_img = height[:, None].double(), width[:, None].double()
    area = h_img * w_img * _between(u[..., 0], scale)
    aspect = torch.exp(_between(u[..., 1], (math.log(ratio[0]), math.log(ratio[1]))))
    w = torch.round(torch.sqrt(area * aspect))  # half to even, as Python's round()
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    top = torch.floor(u[..., 2] * (h_img - h + 1))
    left = torch.floor(u[..., 3] * (w_img - w + 1))
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first attempt that fits
    box = [a.gather(1, first).squeeze(1) for a in (top, left, h, w)]
    # fallback: the whole image, cut to the nearest allowed aspect ratio, centred
    hd, wd = height.double(), width.double()
    in_ratio = wd / hd
    fb_w = torch.where(in_ratio > ratio[1], torch.round(hd * ratio[1]), wd)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(wd / ratio[0]), hd)
    fallback = [torch.floor((hd - fb_h) / 2), torch.floor((wd - fb_w) / 2), fb_h, fb_w]
    none_fit = ~fits.any(dim=1)
    return tuple(torch.where(none_fit, f, b).long() for b, f in zip(box, fallback))


def sample_params(spec: ViewSpec, u: torch.Tensor, height: torch.Tensor,
                  width: torch.Tensor) -> ViewParams:
    """ViewParams from (B, DRAWS) uniforms; height, width: (B,) source image sizes; all on
    u's device, with no value read back to the host."""
    c = CROP_DRAWS
    top, left, h, w = crop_boxes(u[:, :c], height, width, spec.scale, spec.ratio)
    defaults = (1.0, 1.0, 1.0, 0.0)  # no change; hue is a shift
    factors = [_between(u[:, c + 2 + k], r) if r is not None
               else torch.full_like(u[:, 0], defaults[k]) for k, r in enumerate(spec.jitter)]
    any_jitter = any(r is not None for r in spec.jitter)
    return ViewParams(
        top=top, left=left, height=h, width=w,
        flip=u[:, c] < spec.flip_p, jitter=(u[:, c + 1] < spec.jitter_p) & any_jitter,
        factors=torch.stack(factors, dim=1).float(),
        order=torch.argsort(u[:, c + 6:c + 10], dim=1),
        grey=u[:, c + 10] < spec.grey_p,
        blur=u[:, c + 11] < spec.blur_p, sigma=_between(u[:, c + 12], spec.sigmas).float(),
        solarize=u[:, c + 13] < spec.solarize_p)
