"""Batched views (`aug.batched`): the parameter distributions are lightly's / torchvision's,
one image's batched output is torchvision's functional ops with the same parameters, and
an image's views depend only on (seed, epoch, index)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURE
from PIL import Image
from torchvision.transforms import ColorJitter, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from ssl_bf.config.schema import AugConfig
from ssl_bf.data.batched_ops import blur_kernel_size
from ssl_bf.data.batched_views import BatchedViews, ViewCrops, apply_view, view_params
from ssl_bf.data.transforms import pretrain_transform
from ssl_bf.data.view_params import ViewSpec, spec_from_lightly

N = 10_000
KS_CRITICAL = 1.949 * np.sqrt(2 / N)  # two-sample KS at alpha = 0.001, n = m = N


def ks(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a)
                        - np.searchsorted(b, grid, "right") / len(b)).max())


def draws(spec: ViewSpec, h: int = 32, w: int = 32, epoch: int = 0):
    return view_params(spec, seed=3, epoch=epoch, view=0, index=torch.arange(N), height=h, width=w)


def mocov2_spec(min_scale=0.2) -> ViewSpec:
    return spec_from_lightly(
        pretrain_transform("mocov2", 32, AugConfig(min_scale=min_scale)).transforms[0])


def test_spec_is_read_off_lightlys_transforms():
    v2 = mocov2_spec()
    assert ((v2.scale, v2.flip_p, v2.jitter_p, v2.grey_p, v2.blur_p)
            == ((0.2, 1.0), 0.5, 0.8, 0.2, 0.5))
    assert v2.jitter == ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    byol = pretrain_transform("mocov3", 32, AugConfig(min_scale=0.08)).transforms
    s1, s2 = (spec_from_lightly(v) for v in byol)
    assert (s1.blur_p, s1.solarize_p, s2.blur_p, s2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert s1.jitter[2] == (0.8, 1.2) and s1.scale == (0.08, 1.0) and s2.threshold == 128 / 255


@pytest.mark.parametrize("shape, min_scale", [((32, 32), 0.2), ((32, 32), 0.08), ((40, 90), 0.08),
                                             ((375, 500), 0.2), ((500, 375), 0.08)])
def test_crop_area_and_aspect_ratio_follow_torchvisions_get_params(shape, min_scale):
    h, w = shape
    ours = draws(mocov2_spec(min_scale), h, w)
    torch.manual_seed(0)
    ref = np.array([RandomResizedCrop.get_params(torch.empty(3, h, w), [min_scale, 1.0],
                                                 [3 / 4, 4 / 3])
                    for _ in range(N)], dtype=float)  # (top, left, height, width)
    area = (ours.height * ours.width).numpy() / (h * w)
    assert ks(area, ref[:, 2] * ref[:, 3] / (h * w)) < KS_CRITICAL
    assert ks((ours.width / ours.height).numpy(), ref[:, 3] / ref[:, 2]) < KS_CRITICAL
    assert (ks(ours.top.numpy(), ref[:, 0]) < KS_CRITICAL
            and ks(ours.left.numpy(), ref[:, 1]) < KS_CRITICAL)
    assert (ours.top + ours.height <= h).all() and (ours.left + ours.width <= w).all()


def test_jitter_factors_and_order_follow_torchvisions_colorjitter():
    spec = mocov2_spec()
    ours = draws(spec)
    torch.manual_seed(0)
    jitter = ColorJitter(0.4, 0.4, 0.4, 0.1)
    ref = [ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
           for _ in range(N)]
    for k in range(4):
        assert ks(ours.factors[:, k].numpy(), [r[k + 1] for r in ref]) < KS_CRITICAL, k
    # the order: each of the 24 permutations about equally often, as torch.randperm(4)
    counts = np.unique(ours.order.numpy() @ np.array([1, 4, 16, 64]), return_counts=True)[1]
    assert len(counts) == 24 and np.abs(counts / N - 1 / 24).max() < 4 * np.sqrt(1 / 24 / N)


def test_each_probability_and_the_blur_sigma():
    byol2 = spec_from_lightly(pretrain_transform("mocov3", 32, AugConfig()).transforms[1])
    p = draws(byol2)
    for name, expected in (("flip", 0.5), ("jitter", 0.8), ("grey", 0.2), ("blur", 0.1),
                           ("solarize", 0.2)):
        rate = getattr(p, name).float().mean().item()
        assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / N), name
    assert ks(p.sigma.numpy(), np.random.default_rng(0).uniform(0.1, 2.0, N)) < KS_CRITICAL
    # different views, epochs and seeds draw independently
    other = view_params(byol2, seed=3, epoch=1, view=0, index=torch.arange(N), height=32, width=32)
    assert abs(np.corrcoef(p.factors[:, 0], other.factors[:, 0])[0, 1]) < 0.05


def test_an_images_parameters_depend_only_on_seed_epoch_and_index():
    spec = mocov2_spec()
    batch = view_params(spec, 1, 4, 0, torch.tensor([7, 123, 5, 9999]), 32, 32)
    alone = view_params(spec, 1, 4, 0, torch.tensor([5]), 32, 32)
    for field in ("top", "left", "height", "width", "flip", "factors", "order", "sigma"):
        assert torch.equal(getattr(batch, field)[2:3], getattr(alone, field)), field
    later = view_params(spec, 1, 5, 0, torch.tensor([5]), 32, 32)
    assert not torch.equal(later.factors, alone.factors)


def functional_view(x, p, i: int, spec: ViewSpec):
    """One image (a float tensor or a PIL image) through torchvision's functional ops with
    the i-th parameters, up to the normalisation."""
    x = TF.resized_crop(x, int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]),
                        [spec.size, spec.size], antialias=True)
    if p.flip[i]:
        x = TF.horizontal_flip(x)
    if p.jitter[i]:
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in p.order[i].tolist():
            x = ops[k](x, float(p.factors[i, k]))
    if p.grey[i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p.blur[i]:
        k = blur_kernel_size(spec.sigmas[1], spec.size)
        x = TF.gaussian_blur(x, [k, k], [float(p.sigma[i])] * 2)
    if p.solarize[i]:
        x = TF.solarize(x, spec.threshold)
    return x


def reference_view(img: torch.Tensor, p, i: int, spec: ViewSpec) -> torch.Tensor:
    return TF.normalize(functional_view(img, p, i, spec), list(spec.mean), list(spec.std))


@pytest.mark.parametrize("source, size", [(32, 32), (48, 32), (24, 32)])
def test_one_images_batched_view_equals_torchvisions_functional_ops(source, size):
    spec = ViewSpec(size=size, scale=(0.08, 1.0), jitter_p=0.7,
                    jitter=((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1)), grey_p=0.3,
                    blur_p=0.5, solarize_p=0.5, mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, source, source), dtype=torch.uint8, generator=g)
    p = view_params(spec, 0, 0, 0, torch.arange(64), source, source)
    for name in ("flip", "jitter", "grey", "blur", "solarize"):  # every branch is exercised
        assert 0 < getattr(p, name).sum() < 64, name
    out = apply_view(images, p, spec)
    ref = torch.stack([reference_view(images[i].float() / 255, p, i, spec) for i in range(64)])
    assert out.shape == ref.shape == (64, 3, size, size)
    # float32 rounding along different summation orders; 1e-4 of a normalised unit
    assert (out - ref).abs().max() < 1e-4


@pytest.mark.parametrize("method", ["mocov2", "mocov3"])
def test_batched_views_equal_the_pil_pipeline_up_to_its_8_bit_rounding(method):
    """The PIL path lightly's transforms take (crop, flip, jitter, grey on PIL images, as in
    the loader workers) against the batched ops, same parameters, 300 real CIFAR-10 images.
    PIL rounds every intermediate image down to 8 bits (and hue through 8-bit HSV); the
    batched ops stay in float. Measured: mean |diff| 1.1/255, mean diff -1.0/255 (PIL's
    truncation), 99th percentile 3.2/255 - the only systematic difference is that PIL's
    views are ~1/255 darker."""
    files = sorted((FIXTURE / "train").glob("*/*"))
    images = torch.stack([TF.pil_to_tensor(Image.open(f).convert("RGB")) for f in files])
    spec = spec_from_lightly(pretrain_transform(method, 32, AugConfig(blur=False)).transforms[0])
    p = view_params(spec, 0, 0, 0, torch.arange(len(images)), 32, 32)
    assert p.jitter.sum() > len(images) // 2 and p.grey.sum() > 10
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    ours = apply_view(images, p, spec) * std + mean
    pil = torch.stack([TF.to_dtype(TF.pil_to_tensor(functional_view(TF.to_pil_image(images[i]),
                                                                    p, i, spec)),
                                   torch.float32, scale=True) for i in range(len(images))])
    diff = (pil - ours) * 255
    assert diff.abs().mean() < 1.5
    assert -1.5 < diff.mean() < 0.0
    assert diff.abs().flatten().quantile(0.99) < 4.0


def test_batched_views_match_for_any_batch_split():
    views = BatchedViews.from_lightly(pretrain_transform("mocov3", 32, AugConfig()), seed=5)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g)
    index = torch.arange(100, 112)
    whole = views(images, index, epoch=2)
    halves = [views(images[s], index[s], epoch=2) for s in (slice(0, 5), slice(5, 12))]
    for v in range(2):
        assert torch.allclose(whole[v], torch.cat([h[v] for h in halves]), atol=1e-6)
    assert not torch.allclose(whole[0], whole[1])


def test_images_of_mixed_sizes_are_cropped_in_the_loader_as_the_device_would():
    views = BatchedViews.from_lightly(pretrain_transform("mocov2", 32, AugConfig()), seed=2)
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (6, 3, 48, 48), dtype=torch.uint8, generator=g)
    index = torch.arange(20, 26)
    on_device = views(images, index, epoch=1)
    pairs = torch.stack([ViewCrops(views, 1, int(index[i]))(images[i]) for i in range(6)])
    assert pairs.shape == (6, 2, 3, 32, 32) and pairs.dtype == torch.uint8
    in_loader = views(pairs, index, epoch=1)
    for a, b in zip(on_device, in_loader):
        # the loader's crop is rounded to uint8 (half a level, then through jitter): small,
        # against a spread of ~1 between the two views' pixels
        assert (a - b).abs().mean() < 0.01 and (a - b).abs().max() < 0.1
    assert (on_device[0] - on_device[1]).abs().mean() > 0.3
