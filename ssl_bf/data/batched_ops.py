"""Image operations on a batch, each image with its own parameters: pure tensor functions.

Images are float (B, 3, H, W) in [0, 1]. Each function follows the semantics of
torchvision's functional op of the same name for one image (tests/test_batched_views.py
compares them image by image); what differs is only that every parameter is a (B,)
tensor. Written here rather than taken from kornia: its per-sample parameters come from
its own random draws, and our parameters must be a pure function of (seed, epoch, image).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GREY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale (ITU-R 601-2 luma)


def resize_weights(start: torch.Tensor, length: torch.Tensor, size_in: int,
                   size_out: int) -> torch.Tensor:
    """(B, size_out, size_in): row o resamples source pixels start..start+length-1 to output o.

    The triangle (bilinear) filter, widened by the scale when shrinking (antialias), with
    the weights of each output renormalised over the pixels inside the crop - what
    torchvision's resized_crop(..., BILINEAR, antialias=True) computes per axis.
    """
    dev = start.device  # built where the crop boxes are: the training device
    scale = (length.double() / size_out)[:, None, None]
    centre = (start.double()[:, None, None]
              + (torch.arange(size_out, dtype=torch.float64, device=dev)[None, :, None] + 0.5)
              * scale)
    support = scale.clamp(min=1.0)
    x = torch.arange(size_in, dtype=torch.float64, device=dev)[None, None, :]
    w = (1.0 - (x + 0.5 - centre).abs() / support).clamp(min=0.0)
    inside = (x >= start[:, None, None]) & (x < (start + length)[:, None, None])
    w = w * inside
    return (w / w.sum(dim=2, keepdim=True)).float()


def resized_crop(images: torch.Tensor, top, left, height, width, flip, size: int) -> torch.Tensor:
    """Crop each image to its box, resize to size x size (bilinear), mirror where `flip`.

    Separable: out = Wy · image · Wxᵀ per image and channel, two batched matmuls.
    """
    _, _, h_in, w_in = images.shape
    wy = resize_weights(top, height, h_in, size)
    wx = resize_weights(left, width, w_in, size)
    wx = torch.where(flip[:, None, None], wx.flip(1), wx)
    rows = torch.einsum("boh,bchw->bcow", wy, images)
    return torch.einsum("bcow,bpw->bcop", rows, wx)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma."""
    r, g, b = images.unbind(1)
    return (GREY[0] * r + GREY[1] * g + GREY[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * a + (1.0 - f) * b).clamp(0.0, 1.0)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, torch.zeros_like(images), factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, grey(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, grey(images), factor)


def hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` turns (in [-0.5, 0.5]), through HSV."""
    value, lowest = images.amax(dim=1), images.amin(dim=1)
    chroma = value - lowest
    sat = chroma / torch.where(value > 0, value, torch.ones_like(value))
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = images.unbind(1)
    # hue in sixths of a turn: which channel is the maximum decides the sector
    h = torch.where(value == r, (g - b) / safe,
                    torch.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(chroma > 0, h, torch.zeros_like(h))
    h = torch.remainder(h / 6.0 + shift.view(-1, 1, 1), 1.0)
    # back to RGB: channel n takes v - v·s·clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
    n = torch.arange(5.0, 0.0, -2.0, device=images.device).view(1, 3, 1, 1)  # 5, 3, 1
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return (value.unsqueeze(1) * (1.0 - sat.unsqueeze(1) * ramp)).clamp(0.0, 1.0)


JITTER_OPS = (brightness, contrast, saturation, hue)


def colour_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor,
                  apply: torch.Tensor) -> torch.Tensor:
    """torchvision ColorJitter with per-image factors (B, 4) and op order (B, 4), on the
    images where `apply` (B,) is true."""
    out = images
    for position in range(4):
        for op_id, op in enumerate(JITTER_OPS):
            rows = apply & (order[:, position] == op_id)
            out = where_rows(rows, op, out, factors[:, op_id])
    return out


def blur_kernel_size(sigma_max: float, size: int) -> int:
    """Taps out to 3 sigma of the widest blur (lightly blurs with PIL's Gaussian of std sigma,
    whose support is not cut at a fixed kernel), odd, and no wider than the image allows."""
    k = 2 * math.ceil(3.0 * sigma_max) + 1
    return max(1, min(k, 2 * (size // 2) - 1))


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """torchvision gaussian_blur([kernel, kernel], [sigma, sigma]) per image: reflect padding,
    separable (row then column) with each image's own kernel."""
    b, c, h, w = images.shape
    x = torch.arange(kernel, dtype=torch.float32, device=images.device) - (kernel - 1) / 2
    k1 = torch.exp(-0.5 * (x[None, :] / sigma.to(images.device)[:, None]) ** 2)
    k1 = (k1 / k1.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    pad = kernel // 2
    flat = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, k1.view(b * c, 1, 1, kernel), groups=b * c)
    flat = F.conv2d(flat, k1.view(b * c, 1, kernel, 1), groups=b * c)
    return flat.view(b, c, h, w)


def solarize(images: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(images >= threshold, 1.0 - images, images)


def where_rows(mask: torch.Tensor, fn, images: torch.Tensor, *args) -> torch.Tensor:
    """fn applied to the rows of `images` where mask is true (per-row args alike).

    On a CPU only those rows are computed (finding them reads the mask, which costs nothing
    there). Elsewhere every row is computed and the mask selects: reading it would make the
    host wait for the GPU. Each row's value is the same either way (tests/test_gpu_step.py)."""
    if images.device.type == "cpu" and not MASKED_ON_CPU:
        rows = mask.nonzero().squeeze(1)
        if len(rows) == 0:
            return images
        out = images.clone()
        out[rows] = fn(images[rows], *[a[rows] if torch.is_tensor(a) else a for a in args])
        return out
    return torch.where(mask.view(-1, 1, 1, 1), fn(images, *args), images)


MASKED_ON_CPU = False  # tests set it to compare the two ways on one device


def normalise(images: torch.Tensor, mean: tuple[float, ...],
              std: tuple[float, ...]) -> torch.Tensor:
    """(x - mean) / std per channel; the constants are filled on the device, not copied there
    from the host (a copy from pageable memory waits for the GPU)."""
    m = torch.empty(1, 3, 1, 1, device=images.device)
    s = torch.empty(1, 3, 1, 1, device=images.device)
    for c in range(3):
        m[:, c].fill_(mean[c])
        s[:, c].fill_(std[c])
    return (images - m) / s
