"""Find a data set on disk and open one split of it as an ImageSource.

Layouts understood, per data.dataset:
  cifar10 / cifar100  an ImageFolder tree ROOT/train/<class>/*, ROOT/test/<class>/*,
                      or torchvision's files (ROOT/cifar-10-batches-py, ...)
  stl10               torchvision's files (ROOT/stl10_binary); pretraining uses
                      unlabeled + train, evaluation train / test
  imagefolder         ROOT/train/<class>/* with ROOT/val or ROOT/test beside it,
                      or ROOT/<class>/* (a training set only)
  any, in shards      ROOT (a folder or an http(s):// URL) holding train.json / test.json
                      shard indexes (python -m ssl_bf.data.shard writes them)
Splits: "pretrain" (what SSL trains on), "train" (labelled, the kNN bank and
probe training set), "test" (labelled, queries / probe evaluation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision import datasets as tvd

from ssl_bf.config.schema import DataConfig
from ssl_bf.data.images import ImageSource
from ssl_bf.data.shard_cache import ShardCache
from ssl_bf.data.shard_reader import ShardReader, index_location, is_sharded
from ssl_bf.errors import UsageError

TORCHVISION_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python",
                    "stl10": "stl10_binary"}
TORCHVISION_CLASSES = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "stl10": tvd.STL10}
NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "stl10": 96}
HOW_TO = ("with a network: data.download=true; offline: put torchvision's files or an "
          "ImageFolder tree (ROOT/train/<class>/*, ROOT/test/<class>/*) at ROOT, or set data.root")


def open_split(cfg: DataConfig, split: str) -> ImageSource:
    """One split as an ImageSource (not yet subset or cached)."""
    if is_sharded(cfg.root):
        return _shards(cfg, split)
    root = Path(cfg.root).expanduser()
    if cfg.dataset == "imagefolder":
        return _imagefolder_split(root, split)
    tree = _tree_dir(root, split)
    if tree is not None:
        source = _folder(tree)
        source.native_size = NATIVE_SIZE[cfg.dataset]
        return source
    if (root / TORCHVISION_DIRS[cfg.dataset]).is_dir() or cfg.download:
        return _torchvision_split(cfg.dataset, root, split, cfg.download)
    raise UsageError(
        f"data.root: no {cfg.dataset} found at {root} (looked for {root}/train and {root}/test "
        f"as ImageFolder trees, and torchvision's {root}/{TORCHVISION_DIRS[cfg.dataset]}); "
        f"{HOW_TO}")


def fetch(cfg: DataConfig) -> None:
    """Download and extract the data set into data.root unless it is there (data.download;
    an ImageFolder tree already there is used as it is). One process per root should call
    this (training/runtime.py's fetch_once) before any opens the data."""
    root = Path(cfg.root).expanduser()
    if (not cfg.download or cfg.dataset not in TORCHVISION_CLASSES or is_sharded(cfg.root)
            or _tree_dir(root, "train")):
        return
    cls = TORCHVISION_CLASSES[cfg.dataset]
    try:
        if cfg.dataset == "stl10":
            cls(str(root), split="train", download=True)
        else:
            cls(str(root), train=True, download=True)  # the one archive holds both splits
    except (RuntimeError, OSError) as err:  # no network, a corrupt archive, no space
        raise UsageError(f"data.download: cannot fetch {cfg.dataset} into {root}: "
                         f"{str(err).splitlines()[0]}") from None


def _shards(cfg: DataConfig, split: str) -> ImageSource:
    """A split in shards (data/shard_reader.py): the index read and every shard checked
    now, the images read by index while training."""
    reader = ShardReader(index_location(cfg.root, split),
                         ShardCache(cfg.shard_cache, cfg.shard_cache_gb))
    reader.check()
    return ImageSource(labels=reader.labels, classes=reader.classes, shards=reader,
                       items=list(range(len(reader))), native_size=NATIVE_SIZE.get(cfg.dataset),
                       description=reader.index)


def _tree_dir(root: Path, split: str) -> Path | None:
    name = {"pretrain": "train", "train": "train", "test": "test"}[split]
    candidates = [root / name] + ([root / "val"] if split == "test" else [])
    return next((c for c in candidates if c.is_dir()), None)


def _imagefolder_split(root: Path, split: str) -> ImageSource:
    tree = _tree_dir(root, split)
    if tree is None and split != "test" and root.is_dir():
        tree = root  # ROOT/<class>/* is a training set with no test split
    if tree is None:
        looked = f"{root}/val or {root}/test" if split == "test" else f"{root}/train or {root}"
        raise UsageError(f"data.root: no {split} images found (looked for {looked}); "
                         "imagefolder expects ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg")
    return _folder(tree)


def _folder(tree: Path) -> ImageSource:
    try:
        folder = tvd.ImageFolder(str(tree))
    except (FileNotFoundError, RuntimeError) as err:
        raise UsageError(f"data.root: {tree} holds no usable images "
                         f"({str(err).splitlines()[0]})") from None
    if not folder.samples:
        raise UsageError(f"data.root: {tree} holds no images")
    paths = [p for p, _ in folder.samples]
    labels = np.asarray([c for _, c in folder.samples], dtype=np.int64)
    return ImageSource(labels=labels, classes=list(folder.classes), paths=paths,
                       description=str(tree))


def _torchvision_split(dataset: str, root: Path, split: str, download: bool) -> ImageSource:
    cls = TORCHVISION_CLASSES[dataset]
    try:
        if dataset == "stl10":
            name = {"pretrain": "train+unlabeled", "train": "train", "test": "test"}[split]
            ds = cls(str(root), split=name, download=download)
            arrays, labels = ds.data.transpose(0, 2, 3, 1), np.asarray(ds.labels, np.int64)
        else:
            ds = cls(str(root), train=split != "test", download=download)
            arrays, labels = ds.data, np.asarray(ds.targets, np.int64)
    except (RuntimeError, OSError) as err:  # missing/corrupt files, no network
        raise UsageError(f"data.root: cannot open {dataset} at {root}: "
                         f"{str(err).splitlines()[0]}; {HOW_TO}") from None
    classes = list(getattr(ds, "classes", [])) or [str(i) for i in range(int(labels.max()) + 1)]
    if dataset == "stl10" and split == "pretrain":
        labels = None  # unlabeled images carry -1: no labels for the whole split
    return ImageSource(labels=labels, classes=classes, arrays=np.ascontiguousarray(arrays),
                       native_size=NATIVE_SIZE[dataset], description=f"{dataset}:{split}")
