"""Images as uint8 RGB arrays: read from files (any mode) or held in memory.

An ImageSource is the one interface the rest of the package sees: `len`,
`load(i) -> (H, W, 3) uint8`, `labels` (or None), `classes`, `native_size`.
Files of any PIL mode - grayscale, RGBA, palette, 16-bit - come out as RGB;
an unreadable file raises BadImage naming it, so the caller can replace the
sample (or stop, under data.strict).
"""
from __future__ import annotations

import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image


class BadImage(Exception):
    """A file that cannot be decoded as an image. str() is '<path>: <reason>'."""


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8. 16/32-bit grey is scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "RGB":
        return np.asarray(img)
    if img.mode in ("P", "PA", "LA") or "A" in img.mode:
        img = img.convert("RGBA")  # palette transparency becomes an alpha channel first
    return np.asarray(img.convert("RGB"))


# reduce(h, w) -> 1, 2, 4 or 8: asked with a file's stored size before it is decoded
Reduce = Optional[Callable[[int, int], int]]


def read_image(path: str, reduce: Reduce = None, data: bytes | None = None) -> np.ndarray:
    """A file - or, given `data`, those bytes, `path` naming them - as (H, W, 3) uint8; a JPEG
    decoded `reduce(h, w)` times smaller where asked (libjpeg's DCT scaling through PIL's
    draft; other formats decode whole)."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            if reduce is not None and (r := reduce(img.height, img.width)) > 1:
                # PIL scales by the largest factor that keeps the image at least this size
                img.draft(img.mode, (img.width // r, img.height // r))
            img.load()
            arr = to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImage(f"{path}: {err}") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise BadImage(f"{path}: decoded to an unusable shape {arr.shape}")
    return np.ascontiguousarray(arr)


def conform(image: np.ndarray, size: Optional[int]) -> np.ndarray:
    """An image of a fixed-size dataset (CIFAR's 32 px) that is not that size - a stray file in
    a tree read as cifar10 - is resized to it (bilinear), so that every image stacks into one
    batch: the batched views and the evaluation take the dataset's size as given."""
    if size is None or image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


@dataclass
class ImageSource:
    """Images from `paths` (read lazily) or `arrays` (already decoded)."""

    labels: Optional[np.ndarray]
    classes: list[str]
    paths: Optional[list[str]] = None
    arrays: Optional[Sequence[np.ndarray]] = None
    native_size: Optional[int] = None  # all images are native_size^2 (CIFAR, STL)
    bad: set = field(default_factory=set)  # indices found unreadable while caching
    description: str = ""
    shards: Optional[object] = None  # a ShardReader (data/shard_reader.py) ...
    items: Optional[list[int]] = None  # ... and the samples of it this source holds

    def __len__(self) -> int:
        if self.arrays is not None:
            return len(self.arrays)
        return len(self.paths) if self.paths is not None else len(self.items)

    def name(self, i: int) -> str:
        if self.shards is not None:
            return self.shards.name(self.items[i])
        return self.paths[i] if self.paths is not None else f"{self.description}[{i}]"

    def load(self, i: int, reduce: Reduce = None, data: bytes | None = None) -> np.ndarray:
        """Image i; `reduce` (read_image's) applies to files, not to images in memory. `data`:
        its stored bytes where the caller has read them already (stored)."""
        if i in self.bad:
            raise BadImage(f"{self.name(i)}: unreadable (found while caching)")
        if self.arrays is not None:
            return self.arrays[i]
        if data is None and self.shards is not None:
            data = self._shard_bytes(i)
        return conform(read_image(self.name(i), reduce, data), self.native_size)

    def stored(self, i: int) -> bytes | None:
        """Image i's bytes as stored (a file, a shard's member): read once where both its size
        and its pixels are needed (a loader batch's crops); None for images in memory or
        where they cannot be read (load says why)."""
        if self.arrays is not None or i in self.bad:
            return None
        try:
            if self.shards is not None:
                return self._shard_bytes(i)
            with open(self.paths[i], "rb") as f:
                return f.read()
        except (BadImage, OSError):
            return None

    def size(self, i: int, data: bytes | None) -> tuple[int, int] | None:
        """(h, w) of image i as stored - from the header of `data`, its bytes (stored(i)),
        nothing decoded - or None where it cannot be read (load says why)."""
        if self.arrays is not None:
            return None if i in self.bad else tuple(self.arrays[i].shape[:2])
        if data is None:
            return None
        try:
            with Image.open(io.BytesIO(data)) as img:
                return img.height, img.width
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return None

    def _shard_bytes(self, i: int) -> bytes:
        try:
            return self.shards.read(self.items[i])
        except (OSError, tarfile.TarError) as err:
            raise BadImage(f"{self.name(i)}: {err}") from None

    def select(self, indices: np.ndarray) -> "ImageSource":
        pick = [int(i) for i in indices]
        remap = {old: new for new, old in enumerate(pick)}
        return ImageSource(
            labels=None if self.labels is None else self.labels[pick],
            classes=self.classes,
            paths=None if self.paths is None else [self.paths[i] for i in pick],
            arrays=None if self.arrays is None else _take(self.arrays, pick),
            native_size=self.native_size,
            bad={remap[i] for i in self.bad if i in remap},
            description=self.description,
            shards=self.shards,
            items=None if self.items is None else [self.items[i] for i in pick])


def _take(arrays: Sequence[np.ndarray], pick: list[int]):
    return arrays[pick] if isinstance(arrays, np.ndarray) else [arrays[i] for i in pick]


def stratified_first(labels: Optional[np.ndarray], n: int, total: int) -> np.ndarray:
    """The first n indices, balanced over classes: the 1st of every class, then the 2nd..."""
    if n >= total:
        return np.arange(total)
    if labels is None:
        return np.arange(n)
    rank_in_class = np.zeros(total, dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank_in_class[members] = np.arange(len(members))
    order = np.lexsort((np.arange(total), rank_in_class))  # by rank, ties by index
    return np.sort(order[:n])


def long_tail_counts(n_max: int, classes: int, ratio: float) -> list[int]:
    """Cui et al. (CVPR 2019)'s exponential profile: n_c = floor(n_max * ratio^(-c / (C - 1)))."""
    if classes == 1:
        return [n_max]
    return [int(np.floor(n_max * ratio ** (-c / (classes - 1)) + 1e-9)) for c in range(classes)]


def long_tail_first(labels: np.ndarray, ratio: float, classes: int | None = None) -> np.ndarray:
    """Indices of the long-tailed cut: class c (label order) keeps its first n_c images,
    n_max being the largest class's count. CIFAR-10 at ratio 100: 5000 ... 50, 12,406."""
    classes = classes or int(labels.max()) + 1
    have = np.bincount(labels, minlength=classes)
    keep = long_tail_counts(int(have.max()), classes, ratio)
    picked = [np.flatnonzero(labels == c)[:keep[c]] for c in range(classes)]
    return np.sort(np.concatenate(picked))


def decode_all(source: ImageSource, limit_gb: float, threads: int) -> ImageSource:
    """Decode a file-backed source into memory when it fits in `limit_gb`.

    JPEG decoding releases the GIL, so threads scale; CIFAR-10's 50,000 files
    take a few seconds. Unreadable files are remembered in `bad`, not fatal.
    """
    if source.arrays is not None or len(source) == 0 or limit_gb <= 0:
        return source
    sample = next((a for a in map(lambda i: _probe(source, i), range(min(len(source), 16)))
                   if a is not None), None)
    if sample is None or sample.nbytes * len(source) > limit_gb * 2**30:
        return source  # nothing readable up front, or too big: read lazily from the files

    def decode(i: int):
        try:
            return source.load(i)
        except BadImage:
            return None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        decoded = list(pool.map(decode, range(len(source)), chunksize=256))
    bad = {i for i, a in enumerate(decoded) if a is None}
    shapes = {a.shape for a in decoded if a is not None}
    placeholder = np.zeros(next(iter(shapes)) if shapes else (1, 1, 3), np.uint8)
    decoded = [placeholder if a is None else a for a in decoded]
    arrays = np.stack(decoded) if len(shapes) == 1 else decoded
    return ImageSource(source.labels, source.classes, source.paths, arrays,
                       source.native_size, bad, source.description, source.shards, source.items)


def _probe(source: ImageSource, i: int) -> Optional[np.ndarray]:
    try:
        return source.load(i)
    except BadImage:
        return None


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
