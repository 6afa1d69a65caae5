"""Data: sources, stratified subsets, the global-batch sampler, seeded views, image modes."""
from __future__ import annotations

import os

import numpy as np
import pytest
import sklearn
import torch
from PIL import Image

from ssl_bf.config.schema import AugConfig, DataConfig
from ssl_bf.data.images import BadImage, read_image, stratified_first
from ssl_bf.data.pipeline import build_source
from ssl_bf.data.pretrain_input import ViewsDataset
from ssl_bf.data.sampler import GlobalBatchSampler
from ssl_bf.data.transforms import pretrain_transform
from ssl_bf.errors import UsageError


def test_stratified_first_balances_classes():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    picked = stratified_first(labels, 6, len(labels))
    assert list(picked) == [0, 1, 4, 5, 6, 7]  # two of each class, earliest first
    assert list(stratified_first(None, 3, 9)) == [0, 1, 2]


def test_cifar_tree_is_found_cached_and_subset(cifar_root):
    cfg = DataConfig(root=str(cifar_root))
    source = build_source(cfg, "pretrain", subset=50)
    assert len(source) == 50
    assert isinstance(source.arrays, np.ndarray) and source.arrays.shape == (50, 32, 32, 3)
    assert np.bincount(source.labels).tolist() == [5] * 10
    assert len(build_source(cfg, "test")) == 100
    assert source.native_size == 32


def test_missing_data_names_the_layouts(tmp_path):
    with pytest.raises(UsageError) as err:
        build_source(DataConfig(root=str(tmp_path / "none")), "pretrain")
    message = str(err.value)
    assert ("train" in message and "cifar-10-batches-py" in message
            and "data.download=true" in message)
    assert "../shared" not in message


def samplers(size, batch, world, accumulate=1, start=0):
    return [list(GlobalBatchSampler(size, batch, accumulate, r, world, seed=3, epoch=1,
                                    start_step=start))
            for r in range(world)]


def test_two_processes_see_the_one_process_global_batch():
    (one,) = samplers(100, 20, 1)
    two = samplers(100, 20, 2)
    assert len(one) == 5 and len(two[0]) == 5  # 100 // 20 steps, the rest dropped
    for step in range(5):
        assert one[step] == two[0][step] + two[1][step]
    flat = [i for b in one for _, i in b]
    assert len(set(flat)) == 100


def test_accumulation_and_resume_offsets():
    (full,) = samplers(100, 20, 1)
    (acc,) = samplers(100, 20, 1, accumulate=2)
    assert [acc[2 * s] + acc[2 * s + 1] for s in range(5)] == full
    (resumed,) = samplers(100, 20, 1, start=3)
    assert resumed == full[3:]
    other_epoch = list(GlobalBatchSampler(100, 20, 1, 0, 1, seed=3, epoch=2))
    assert other_epoch != full


def test_views_are_a_function_of_seed_epoch_and_index(cifar_root):
    source = build_source(DataConfig(root=str(cifar_root)), "pretrain", subset=10)
    ds = ViewsDataset(source, pretrain_transform("mocov3", 32, AugConfig()), seed=0)
    a, b = ds[(0, 4)].images, ds[(0, 4)].images  # (2 views, 3, 32, 32)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # two different augmentations
    assert not torch.equal(ds[(1, 4)].images[0], a[0])  # another epoch, other views
    torch.manual_seed(123)  # the global RNG state does not matter
    assert torch.equal(ds[(0, 4)].images, a)


def test_views_identical_with_and_without_workers(cifar_root):
    source = build_source(DataConfig(root=str(cifar_root)), "pretrain", subset=16)
    ds = ViewsDataset(source, pretrain_transform("mocov2", 32, AugConfig()), seed=0)
    sampler = GlobalBatchSampler(16, 8, 1, 0, 1, seed=0, epoch=0)
    loaders = [torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=w)
               for w in (0, 2)]
    for a, b in zip(*loaders):
        assert torch.equal(a.index, b.index) and torch.equal(a.images, b.images)
        assert a.images.shape == (8, 2, 3, 32, 32) and (a.epoch == 0).all() and (a.bad == -1).all()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    if mode == "I;16":
        img = Image.fromarray((np.arange(35 * 20).reshape(20, 35) * 90).astype(np.uint16))
        fmt = "PNG"
    else:
        img = Image.new("RGB", (35, 20), (200, 30, 10)).convert(mode)
        fmt = "TIFF" if mode == "CMYK" else "PNG"
        path = path.with_suffix(".tif" if mode == "CMYK" else ".png")
    img.save(path, format=fmt)
    arr = read_image(str(path))
    assert arr.shape == (20, 35, 3) and arr.dtype == np.uint8
    if mode == "I;16":  # scaled to 8 bits, not clipped to white
        assert arr.max() > 200 and arr.min() < 10 and len(np.unique(arr)) > 50


def test_corrupt_files_raise_bad_image(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    data = (tmp_path / "good.png")
    Image.new("RGB", (40, 40), (1, 2, 3)).save(data)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(data.read_bytes()[:60])
    for bad in ("text.jpg", "cut.png"):
        with pytest.raises(BadImage, match=bad):
            read_image(str(tmp_path / bad))


def real_photo(path) -> bytes:
    """scikit-learn's real JPEG photograph (china.jpg) stored at 500 x 375."""
    photo = Image.open(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images",
                                    "china.jpg")).convert("RGB")
    photo.resize((500, 375), Image.BICUBIC).save(path, quality=90)
    return path.read_bytes()


def test_truncated_and_garbled_jpegs_raise_bad_image(tmp_path):
    data = real_photo(tmp_path / "good.jpg")
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) * 6 // 10])
    (tmp_path / "head.jpg").write_bytes(data[:700])
    garbled = bytearray(data)
    garbled[2000::97] = bytes((b * 7 + 13) % 256 for b in garbled[2000::97])
    (tmp_path / "garbled.jpg").write_bytes(bytes(garbled))
    for bad in ("cut.jpg", "head.jpg", "garbled.jpg"):
        with pytest.raises(BadImage, match=rf"{bad}: .*(truncated|broken)"):
            read_image(str(tmp_path / bad))
