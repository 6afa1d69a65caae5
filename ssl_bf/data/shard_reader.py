"""Data sets in shards: WebDataset tar files listed by a wids index, on disk or over HTTP(S).

What `python -m ssl_bf.data.shard` writes, and what `data.root` takes when it is a URL or a
folder with a `train.json`: per split an index `pretrain.json` / `train.json` / `test.json`

    {"wids_version": 1, "name": "train", "classes": [...],
     "shardlist": [{"url": "train-000000.tar", "nsamples": 1000, "filesize": 123456,
                    "labels": [3, 0, ...]}, ...]}

(shard URLs relative to the index; `labels` is ours, the rest is wids' descriptor, so
webdataset and wids read the same files) and tar shards holding, per sample, `<key>.jpg`
(or .png / .jpeg / .webp) and `<key>.cls`. Samples are read by index - the global sampler,
the per-image views and mid-epoch resume stay as they are for a folder. Remote shards are
downloaded whole into a local cache capped in size (shard_cache.py); the index and every
shard's presence and size are checked before training, so a missing, truncated or
unreachable one is one error naming it.
"""
from __future__ import annotations

import json
import tarfile
from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path
from urllib.parse import urljoin

import numpy as np

from ssl_bf.data.shard_cache import ShardCache, fetch_bytes, is_url, remote_size
from ssl_bf.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# STL-10 pretrains on more than its labelled train split: the converter writes pretrain.json
# for every data set (for most, it lists the train shards again)
INDEX = {"pretrain": "pretrain.json", "train": "train.json", "test": "test.json"}


def is_sharded(root: str) -> bool:
    """data.root names shards: a URL, or a folder holding a shard index."""
    return is_url(root) or (Path(root).expanduser() / "train.json").is_file()


def index_location(root: str, split: str) -> str:
    if is_url(root):
        return urljoin(root if root.endswith("/") else root + "/", INDEX[split])
    return str(Path(root).expanduser() / INDEX[split])


class ShardReader:
    """Sample i of one split: its image file's bytes, name and label."""

    def __init__(self, index: str, cache: ShardCache):
        self.index, self.cache = index, cache
        spec = _load_index(index)
        self.classes = list(spec.get("classes", []))
        shards = spec["shardlist"]
        self.urls = [_resolve(index, s["url"]) for s in shards]
        self.sizes = [int(s.get("filesize", -1)) for s in shards]
        self.starts = [0, *accumulate(int(s["nsamples"]) for s in shards)]
        self.labels = (np.concatenate([np.asarray(s["labels"], np.int64) for s in shards])
                       if shards and all("labels" in s for s in shards) else None)
        self._members: dict[int, list[tuple[str, int, int]]] = {}  # per process, once a shard

    def __len__(self) -> int:
        return self.starts[-1]

    def check(self) -> None:
        """Every shard there, at the size the index says (a truncated copy fails here)."""
        with ThreadPoolExecutor(max_workers=16) as pool:
            found = list(pool.map(_size_of, self.urls))
        for url, want, have in zip(self.urls, self.sizes, found):
            if have is None:
                raise UsageError(f"data.root: shard {url} (listed in {self.index}) is missing "
                                 "or does not answer")
            if want >= 0 and have >= 0 and have != want:  # -1: the server does not say
                raise UsageError(f"data.root: shard {url} has {have} bytes, its index "
                                 f"{self.index} says {want} (truncated or replaced?)")

    def locate(self, i: int) -> tuple[int, int]:
        shard = bisect_right(self.starts, i) - 1
        return shard, i - self.starts[shard]

    def name(self, i: int) -> str:
        shard, k = self.locate(i)
        return f"{self.urls[shard]}#{k}"

    def read(self, i: int) -> bytes:
        """The image file of sample i. A shard
        that cannot be fetched, or that does not hold what its index says, is a UsageError
        (one line, the run ends and resumes later); a shard whose tar is corrupt raises
        tarfile.TarError / OSError, as a bad image does."""
        shard, k = self.locate(i)
        url = self.urls[shard]
        try:
            f = self.cache.open(url, self.sizes[shard])
        except OSError as err:
            raise UsageError(f"data.root: cannot read shard {url}: {err}") from None
        with f:
            members = self._members.get(shard)
            if members is None:
                members = self._members[shard] = _image_members(f)
                if len(members) != self.starts[shard + 1] - self.starts[shard]:
                    raise UsageError(f"data.root: shard {url} holds {len(members)} images, "
                                     f"its index {self.index} says "
                                     f"{self.starts[shard + 1] - self.starts[shard]}")
            _, offset, size = members[k]
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError("shard ends inside this image")
        return data


def _image_members(file) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of the image members of an open tar file, in order."""
    with tarfile.open(fileobj=file, mode="r:") as tar:
        return [(m.name, m.offset_data, m.size) for m in tar.getmembers()
                if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS)]


def _load_index(index: str) -> dict:
    try:
        text = fetch_bytes(index) if is_url(index) else Path(index).read_bytes()
        spec = json.loads(text)
        assert isinstance(spec.get("shardlist"), list)
        for s in spec["shardlist"]:
            assert isinstance(s.get("url"), str) and int(s["nsamples"]) >= 0
    except (OSError, ValueError, AssertionError, KeyError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else "not a wids shard index"
        raise UsageError(f"data.root: cannot read the shard index {index}: {reason}") from None
    return spec


def _resolve(index: str, url: str) -> str:
    if is_url(url) or Path(url).is_absolute():
        return url
    return urljoin(index, url) if is_url(index) else str(Path(index).parent / url)


def _size_of(url: str) -> int | None:
    if is_url(url):
        return remote_size(url)
    try:
        return Path(url).stat().st_size
    except OSError:
        return None
