"""Crops cut in the loader from JPEG files (the ImageNet recipes' input): the boxes are the
ones the device would draw, a JPEG is decoded smaller only where every crop allows it, and
the crops match torchvision's from the fully decoded image. The photos are real: the JPEG
photographs scikit-learn ships (640 x 427), stored at the sizes a loader meets."""
import builtins
import os

import numpy as np
import pytest
import sklearn
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from ssl_bf.config.schema import AugConfig
from ssl_bf.data.batched_views import MAX_REDUCTION, BatchedViews, ViewCrops, view_params
from ssl_bf.data.images import ImageSource, read_image
from ssl_bf.data.pretrain_input import ImagesDataset
from ssl_bf.data.sampler import GlobalBatchSampler
from ssl_bf.data.transforms import pretrain_transform

PHOTOS = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images")


def photo(folder, name: str, w: int, h: int) -> str:
    """A real photo stored as a w x h JPEG (quality 90)."""
    path = os.path.join(folder, f"{name[:-4]}_{w}x{h}.jpg")
    Image.open(os.path.join(PHOTOS, name)).convert("RGB").resize((w, h), Image.BICUBIC).save(
        path, quality=90)
    return path


def imagenet_views(method: str = "mocov3", seed: int = 1) -> BatchedViews:
    return BatchedViews.from_lightly(pretrain_transform(method, 224, AugConfig()), seed=seed)


def chw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))


@pytest.mark.parametrize("method", ["mocov2", "mocov3"])
def test_loader_boxes_are_the_devices_boxes(method):
    views = imagenet_views(method, seed=3)
    for h, w in [(375, 500), (500, 375), (90, 900), (1200, 1600)]:
        for i in range(0, 2000, 37):
            boxes = ViewCrops(views, 4, i).boxes(h, w)
            for v, spec in enumerate(views.specs):
                p = view_params(spec, 3, 4, v, torch.tensor([i]), h, w)
                assert boxes[v] == (int(p.top[0]), int(p.left[0]), int(p.height[0]),
                                    int(p.width[0]))


def test_at_imagenet_size_the_crops_are_torchvisions_from_the_whole_image(tmp_path):
    path = photo(tmp_path, "china.jpg", 500, 375)
    views = imagenet_views()
    dataset = ImagesDataset(ImageSource(None, [], paths=[path] * 12), seed=1, views=views)
    whole = chw(read_image(path))
    for index in range(12):
        item = dataset[(2, index)]
        assert item.images.shape == (2, 3, 224, 224) and item.images.dtype == torch.uint8
        for v, (t, left, h, w) in enumerate(ViewCrops(views, 2, index).boxes(375, 500)):
            ref = TF.resized_crop(whole, t, left, h, w, [224, 224], antialias=True)
            assert torch.equal(item.images[v], ref)
    # a 224-px crop of a 500 x 375 image never spans 448 px both ways: DCT scaling would
    # lose detail the resize keeps, so these are always decoded whole
    assert all(ViewCrops(views, 2, i).reduction(375, 500) == 1 for i in range(2000))


def test_a_large_jpeg_is_decoded_smaller_only_where_every_crop_allows(tmp_path):
    path = photo(tmp_path, "flower.jpg", 1600, 1200)
    views = imagenet_views("mocov2")
    whole = chw(read_image(path))
    reduced, gaps, between_views = 0, [], []
    for index in range(24):
        crops = ViewCrops(views, 0, index)
        r = crops.reduction(1200, 1600)
        assert r in (1, 2, 4, MAX_REDUCTION)
        for (_, _, h, w), spec in zip(crops.boxes(1200, 1600), views.specs):
            assert min(h, w) / r >= spec.size  # every crop still holds its output size
        image = read_image(path, lambda h, w: r)
        assert image.shape == (-(-1200 // r), -(-1600 // r), 3)  # libjpeg's scaled size
        reduced += r > 1
        ours = crops(chw(image)).float()
        ref = ViewCrops(views, 0, index)(whole).float()
        gaps.append((ours - ref).abs().mean().item())
        between_views.append((ref[0] - ref[1]).abs().mean().item())
    assert reduced >= 12  # most crops of a 1600 x 1200 photo allow it
    odd = photo(tmp_path, "china.jpg", 1601, 1199)  # sides that 2 and 4 do not divide
    for r in (2, 4):
        assert read_image(odd, lambda h, w: r).shape == (-(-1199 // r), -(-1601 // r), 3)
    # DCT scaling low-passes a little differently from the antialiased resize: a few grey
    # levels on average, against tens between an image's two views
    assert np.mean(gaps) < 3.0 and max(gaps) < 6.0  # measured: 1.55, 3.14 (of 255)
    assert np.mean(between_views) > 5 * np.mean(gaps)


def test_crops_are_the_same_with_and_without_workers_and_one_by_one(tmp_path):
    paths = [photo(tmp_path, name, w, h) for name in ("china.jpg", "flower.jpg")
             for w, h in [(500, 375), (375, 500), (1000, 750), (300, 260)]]
    dataset = ImagesDataset(ImageSource(None, [], paths=paths), seed=5,
                            views=imagenet_views())
    sampler = GlobalBatchSampler(len(paths), 4, 1, 0, 1, seed=5, epoch=1)
    runs = [[b.images for b in DataLoader(dataset, batch_sampler=sampler, num_workers=w)]
            for w in (0, 2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs)) and len(runs[0]) == 2
    # the loader draws a batch's boxes at once (__getitems__): the same crops as one by one
    one_by_one = torch.stack([dataset[key].images for key in next(iter(sampler))])
    assert torch.equal(runs[0][0], one_by_one)


def test_a_loader_batch_reads_each_file_once(tmp_path, monkeypatch):
    """Its size (for the batch's boxes) and its pixels come from one read; an unreadable file
    among them is still replaced by the next readable image and reported."""
    paths = [photo(tmp_path, "china.jpg", w, h) for w, h in [(500, 375), (1000, 750), (300, 260)]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    paths.insert(1, str(broken))
    dataset = ImagesDataset(ImageSource(None, [], paths=paths), seed=5, views=imagenet_views())
    keys = [(1, i) for i in range(len(paths))]
    one_by_one = [dataset[key] for key in keys]
    opened, real_open = [], builtins.open

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    batch = dataset.__getitems__(keys)
    monkeypatch.undo()
    readable = [p for p in paths if p != str(broken)]
    # once each, and once more the image that stands in for the broken one (the next one)
    assert sorted(p for p in opened if p in readable) == sorted(readable + [paths[2]])
    assert [int(b.bad) for b in batch] == [-1, 1, -1, -1]
    assert all(torch.equal(b.images, a.images) for a, b in zip(one_by_one, batch))


def test_loader_workers_follow_what_the_workers_do(tmp_path, monkeypatch):
    from ssl_bf.config import load_config
    from ssl_bf.data import pipeline
    from ssl_bf.data.pretrain_input import loader_workers

    monkeypatch.setattr(pipeline, "cpu_threads", lambda: 32)
    files = ImageSource(None, [], paths=[photo(tmp_path, "china.jpg", 500, 375)])
    cached = ImageSource(None, [], arrays=np.zeros((4, 32, 32, 3), np.uint8), native_size=32)
    batched = load_config(["recipe=imagenet_mocov3_r50"])
    pil = load_config(["recipe=imagenet_mocov3_r50", "aug.batched=false"])
    assert loader_workers(batched, files, 8) == 4  # reads JPEGs: every core, no cap at 8
    assert loader_workers(batched, files, 1) == 32
    assert loader_workers(pil, files, 2) == 16
    assert loader_workers(load_config(["recipe=mocov3"]), cached, 2) == 1  # gathers only
    assert loader_workers(load_config(["recipe=mocov3", "data.num_workers=3"]), cached, 2) == 3
