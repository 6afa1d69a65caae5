"""Data sets in shards: the converter, local shards and shards over HTTP from a server this
test starts, identical training from a folder and from its shards, kill -9 and exact resume
on shards, and every bad shard as one error naming it."""
from __future__ import annotations

import functools
import http.server
import json
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURE, REPO
from PIL import Image
from safetensors.torch import load_file
from test_pretrain_cli import metrics, pretrain

from ssl_bf.config.schema import DataConfig
from ssl_bf.data.images import BadImage
from ssl_bf.data.pipeline import build_source
from ssl_bf.data.shard import main as shard_main
from ssl_bf.errors import UsageError


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """The 300 real CIFAR-10 images of the fixture tree in shards of 64."""
    dst = tmp_path_factory.mktemp("shards") / "cifar10"
    assert shard_main([str(FIXTURE), str(dst), "--per-shard", "64"]) == 0
    return dst


@pytest.fixture(scope="module")
def server(shards):
    """An HTTP server on 127.0.0.1 serving the shards' folder; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(shards.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{shards.name}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_the_converter_writes_wids_indexes_and_the_same_images(shards, tmp_path):
    index = json.loads((shards / "train.json").read_text())
    assert index["wids_version"] == 1 and [s["nsamples"] for s in index["shardlist"]] == [
        64, 64, 64, 8]
    assert all((shards / s["url"]).stat().st_size == s["filesize"] for s in index["shardlist"])
    with tarfile.open(shards / "train-000000.tar") as tar:
        names = tar.getnames()
    assert names[:4] == ["00000000.jpg", "00000000.cls", "00000001.jpg", "00000001.cls"]
    for split in ("train", "test"):
        folder = build_source(DataConfig(root=str(FIXTURE)), split)
        sharded = build_source(DataConfig(root=str(shards)), split)
        assert np.array_equal(np.asarray(folder.arrays), np.asarray(sharded.arrays))
        assert np.array_equal(folder.labels, sharded.labels)
        assert folder.classes == sharded.classes and len(sharded) == {"train": 200,
                                                                      "test": 100}[split]
    again = tmp_path / "again"
    assert shard_main([str(FIXTURE), str(again), "--per-shard", "64"]) == 0
    assert (again / "train-000002.tar").read_bytes() == (shards / "train-000002.tar").read_bytes()
    assert shard_main([str(FIXTURE), str(again)]) == 2  # DST holds shards already
    pretrain = json.loads((shards / "pretrain.json").read_text())
    assert pretrain["shardlist"] == index["shardlist"]  # CIFAR pretrains on its train split


def test_shards_over_http_are_cached_within_the_cap(shards, server, tmp_path, monkeypatch):
    monkeypatch.setattr("ssl_bf.data.shard_cache.IN_USE_S", 0.0)  # one reader: evict at once
    cache = tmp_path / "cache"
    cfg = DataConfig(root=server, cache_gb=0, shard_cache=str(cache),
                     shard_cache_gb=200_000 / 2**30)  # a bit more than one 174-KB shard
    source = build_source(cfg, "train")
    folder = build_source(DataConfig(root=str(FIXTURE), cache_gb=0), "train")
    for i in [0, 70, 130, 199, 5, 64]:  # across all four shards, and back
        assert np.array_equal(source.load(i), folder.load(i))
        assert sum(p.stat().st_size for p in cache.glob("*.tar")) <= 200_000 + 174_080
    assert source.name(70) == f"{server}train-000001.tar#6"


def test_training_from_shards_equals_the_folder_and_resumes_exactly_after_kill_9(
        tmp_path, shards, server):
    """The folder's run, straight; the same run from the shards over HTTP (read lazily in two
    loader workers, the cache capped at about one shard - two workers' shards in use pass
    it -), killed -9 after a mid-epoch checkpoint and resumed: the same loss rows and the
    same weights."""
    args = ["recipe=mocov3", "train.epochs=2", "data.subset=128", "train.checkpoint_every=3",
            "data.cache_gb=0", "data.num_workers=2"]  # 4 steps an epoch
    straight = tmp_path / "folder"
    pretrain(straight, FIXTURE, *args)
    crashed = tmp_path / "shards"
    shard_args = [*args, f"data.shard_cache={tmp_path / 'cache'}",
                  f"data.shard_cache_gb={200_000 / 2**30}"]
    proc = pretrain(crashed, server, *shard_args, wait=False)
    marker = crashed / "checkpoints" / "step_00000003"  # mid-epoch
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() else "no marker"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (crashed / "backbone.safetensors").exists()  # it died before the end
    pretrain(crashed, server, *shard_args, "train.resume=auto")
    rows = [[(r["step"], r["loss"]) for r in metrics(out) if "loss" in r]
            for out in (straight, crashed)]
    assert rows[0] == rows[1] and len(rows[0]) == 8
    a, b = (load_file(str(out / "backbone.safetensors")) for out in (straight, crashed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _copy(shards: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in shards.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_a_missing_or_truncated_shard_is_one_error_naming_it(shards, tmp_path):
    bad = _copy(shards, tmp_path / "bad")
    (bad / "train-000001.tar").unlink()
    with pytest.raises(UsageError, match=r"shard .*train-000001.tar .* is missing"):
        build_source(DataConfig(root=str(bad)), "train")
    data = (shards / "train-000001.tar").read_bytes()
    (bad / "train-000001.tar").write_bytes(data[:len(data) // 2])
    with pytest.raises(UsageError, match=r"train-000001.tar has 87040 bytes, its index"):
        build_source(DataConfig(root=str(bad)), "train")
    (bad / "train.json").write_text("{not json")
    result = subprocess.run([sys.executable, "ssl_bf/pretrain.py", "recipe=mocov3",
                             f"data.root={bad}", f"train.output_dir={tmp_path / 'run'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: data.root: cannot read the shard index {bad}/train.json")


def test_urls_that_do_not_answer_are_one_error(shards, server, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match=r"cannot read the shard index http://127.0.0.1:9/"):
        build_source(DataConfig(root="http://127.0.0.1:9/cifar10"), "train")
    with pytest.raises(UsageError, match=r"cannot read the shard index .*nowhere/pretrain"):
        build_source(DataConfig(root=server.replace("cifar10", "nowhere")), "pretrain")
    # a shard that goes away during training ends the run with one line (no image is
    # replaced for it: resume=auto continues once the server answers again)
    _copy(shards, shards.parent / "going")
    source = build_source(DataConfig(root=server.replace("cifar10", "going"), cache_gb=0,
                                     shard_cache=str(tmp_path / "cache")), "train")
    (shards.parent / "going" / "train-000002.tar").unlink()
    monkeypatch.setattr("ssl_bf.data.shard_cache.SHARD_TRIES", 1)
    with pytest.raises(UsageError, match=r"cannot read shard http://.*going/train-000002.tar"):
        source.load(130)
    assert source.load(0).shape == (32, 32, 3)


def test_a_corrupt_image_in_a_shard_is_a_bad_image_naming_it(shards, tmp_path):
    bad = _copy(shards, tmp_path / "garbled")
    data = bytearray((bad / "train-000000.tar").read_bytes())
    with tarfile.open(bad / "train-000000.tar") as tar:
        member = tar.getmember("00000003.jpg")
    data[member.offset_data:member.offset_data + member.size] = bytes(member.size)
    (bad / "train-000000.tar").write_bytes(bytes(data))  # same size: the index still agrees
    source = build_source(DataConfig(root=str(bad), cache_gb=0), "train")
    with pytest.raises(BadImage, match=r"train-000000.tar#3: "):
        source.load(3)
    assert source.load(4).shape == (32, 32, 3)


def test_images_held_as_arrays_are_stored_losslessly(tmp_path):
    # torchvision's CIFAR files come as arrays: they go into the shards as PNG
    from ssl_bf.data.images import ImageSource
    from ssl_bf.data.shard import write_split

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    source = ImageSource(labels=np.arange(10) % 3, classes=["a", "b", "c"], arrays=arrays,
                         native_size=32)
    write_split(source, tmp_path, "train", per_shard=4, short_side=None)
    back = build_source(DataConfig(root=str(tmp_path)), "train")
    assert np.array_equal(np.asarray(back.arrays), arrays)
    assert back.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert back.classes == ["a", "b", "c"]


def test_a_corrupt_file_keeps_its_place_and_later_images_keep_their_labels(tmp_path):
    src = tmp_path / "src" / "train"
    for c, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (src / c).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (8, 8), colour).save(src / c / f"{k}.png")
    (src / "a" / "1z.bmp").write_bytes(b"not a bitmap")  # sorted between a/1.png and b/
    assert shard_main([str(tmp_path / "src"), str(tmp_path / "dst"), "--dataset",
                       "imagefolder"]) == 0
    source = build_source(DataConfig(dataset="imagefolder", root=str(tmp_path / "dst"),
                                     cache_gb=0), "train")
    assert source.labels.tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(BadImage, match=r"train-000000.tar#2"):
        source.load(2)
    assert [tuple(source.load(i)[0, 0]) for i in (0, 1, 3, 4)] == [(255, 0, 0)] * 2 + [
        (0, 0, 255)] * 2


def test_the_cache_names_shards_by_url_and_clears_killed_downloads(tmp_path):
    import os

    from ssl_bf.data.shard_cache import STALE_PART_S, ShardCache, cache_name

    assert cache_name("https://x.org/d/train-000001.tar?sig=abc").endswith("-train-000001.tar")
    assert cache_name("https://x.org/a/s.tar") != cache_name("https://x.org/b/s.tar")
    cache = ShardCache(str(tmp_path), 1e-9)
    old, fresh, keep = (tmp_path / "a.part7", tmp_path / "b.part8", tmp_path / "k.tar")
    for p in (old, fresh, keep, tmp_path / "other.tar"):
        p.write_bytes(b"x" * 10)
    os.utime(old, (0, time.time() - STALE_PART_S - 1))
    os.utime(tmp_path / "other.tar", (0, time.time() - 60))  # not in use
    cache._evict(keep=keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.part8", "k.tar"]


def test_large_photos_in_shards_give_the_folders_crops(tmp_path):
    # the loader reads a member once for its size and its pixels; real photos above 64 KB
    import os

    import sklearn

    from ssl_bf.config.schema import AugConfig
    from ssl_bf.data.batched_views import BatchedViews
    from ssl_bf.data.pretrain_input import ImagesDataset
    from ssl_bf.data.transforms import pretrain_transform

    src = tmp_path / "src" / "train" / "c"
    src.mkdir(parents=True)
    photo = Image.open(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images",
                                    "flower.jpg")).convert("RGB")
    for k, size in enumerate([(1000, 750), (750, 1000), (500, 375)]):
        photo.resize(size).save(src / f"{k}.jpg", quality=95)
    assert (src / "0.jpg").stat().st_size > 1 << 16
    assert shard_main([str(tmp_path / "src"), str(tmp_path / "dst"), "--dataset",
                       "imagefolder"]) == 0
    cfg = {"dataset": "imagefolder", "cache_gb": 0}
    folder = build_source(DataConfig(root=str(tmp_path / "src"), **cfg), "train")
    sharded = build_source(DataConfig(root=str(tmp_path / "dst"), **cfg), "train")
    sizes = [sharded.size(i, sharded.stored(i)) for i in range(3)]
    assert sizes == [(750, 1000), (1000, 750), (375, 500)]
    views = BatchedViews.from_lightly(pretrain_transform("mocov3", 224, AugConfig()), seed=2)
    keys = [(1, 0), (1, 1), (1, 2)]
    a, b = (ImagesDataset(s, 2, views).__getitems__(keys) for s in (folder, sharded))
    assert all(torch.equal(x.images, y.images) for x, y in zip(a, b))
