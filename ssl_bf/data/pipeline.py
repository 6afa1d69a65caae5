"""Splits and evaluation data: a split cut as the config says (subset, long tail), decoded
into memory when it fits; images read robustly; the evaluation dataset; loader workers.
Pretraining's loader and views: data/pretrain_input.py."""
from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ssl_bf.config.schema import Config, DataConfig
from ssl_bf.data.datasets import open_split
from ssl_bf.data.images import (
    BadImage,
    ImageSource,
    Reduce,
    cpu_threads,
    decode_all,
    long_tail_first,
    stratified_first,
)
from ssl_bf.data.transforms import eval_transform
from ssl_bf.errors import UsageError


def cut_split(cfg: DataConfig, split: str, subset: int | None = None,
              imbalance: float | None = None) -> ImageSource:
    """A split, cut to its first `subset` images (stratified) or to the long-tailed profile
    of ratio `imbalance` (data.imbalance); nothing decoded yet."""
    source = open_split(cfg, split)
    if len(source) == 0:
        raise UsageError(f"data.root: the {split} split of {cfg.root} is empty")
    if imbalance is not None:
        if source.labels is None:
            raise UsageError(f"data.imbalance: the {split} split of {cfg.root} has no labels to "
                             "cut by class")
        source = source.select(long_tail_first(source.labels, imbalance,
                                               len(source.classes) or None))
    if subset is not None:
        source = source.select(stratified_first(source.labels, subset, len(source)))
    return source


def pretrain_split(cfg: DataConfig) -> ImageSource:
    """What the run pretrains on: data.subset or data.imbalance applied."""
    return cut_split(cfg, "pretrain", cfg.subset, cfg.imbalance)


def class_counts(source: ImageSource) -> np.ndarray:
    """Images per class of a labelled source (zeros for classes it lacks)."""
    return np.bincount(source.labels,
                       minlength=max(len(source.classes), int(source.labels.max()) + 1))


def describe_split(source: ImageSource) -> str:
    """'pretraining on N images; per class: a b c ...' (the log line and config.yaml header)."""
    line = f"pretraining on {len(source)} images"
    if source.labels is not None and len(source.labels):
        line += "; per class: " + " ".join(str(int(n)) for n in class_counts(source))
    return line


def pretrain_class_counts(cfg: DataConfig) -> np.ndarray:
    """Images per class in the pretraining split (its labels only; nothing is decoded). An
    unlabelled pretraining split (STL-10's) counts as the labelled train split."""
    source = pretrain_split(cfg)
    if source.labels is None:
        source = cut_split(cfg, "train", cfg.subset)
    return class_counts(source)


def build_source(cfg: DataConfig, split: str, subset: int | None = None,
                 imbalance: float | None = None) -> ImageSource:
    """cut_split(...), decoded into memory if it fits."""
    source = decode_all(cut_split(cfg, split, subset, imbalance), cfg.cache_gb, cpu_threads())
    if cfg.strict and source.bad:
        raise UsageError(f"data.strict: unreadable image {source.name(min(source.bad))}")
    return source


class RobustLoader:
    """Load image i; an unreadable one is replaced by the next readable image.

    Returns (image, index of the unreadable file that was replaced or -1), so
    the training process - not a worker - counts replacements and names each
    bad file once. Under data.strict the first unreadable file is an error.
    """

    def __init__(self, source: ImageSource, strict: bool):
        self.source, self.strict = source, strict

    def __call__(self, index: int, reduce: Reduce = None,
                 data: bytes | None = None) -> tuple[np.ndarray, int]:
        """`data`: image `index`'s stored bytes, where the caller read them already."""
        first_bad = -1
        for skipped in range(len(self.source)):
            i = (index + skipped) % len(self.source)
            try:
                return self.source.load(i, reduce, data if skipped == 0 else None), first_bad
            except BadImage as err:
                if self.strict:
                    raise UsageError(f"data.strict: unreadable image {err}") from None
                first_bad = i if first_bad < 0 else first_bad
        raise UsageError(f"data.root: no readable image in {self.source.description}")


class EvalDataset(Dataset):
    """index -> (image tensor, label, index); label -1 where there are none."""

    def __init__(self, source: ImageSource, transform, strict: bool = False):
        self.load = RobustLoader(source, strict)
        self.transform = transform
        self.labels = source.labels

    def __len__(self) -> int:
        return len(self.load.source)

    def __getitem__(self, index: int):
        image, _ = self.load(index)
        label = -1 if self.labels is None else int(self.labels[index])
        return self.transform(Image.fromarray(image)), label, index


def default_workers(cfg: DataConfig, processes_per_node: int,
                    gather_only: bool = False) -> int:
    """data.num_workers, or: one worker per core this process may use (BENCHMARKS §3: best
    when the workers augment; §11: a worker reading JPEGs serves ~100-200 images/s, so a
    GPU takes every core it can get - no cap); one where the workers only gather uint8
    images already in memory (batched views of a cached data set)."""
    if cfg.num_workers is not None:
        return cfg.num_workers
    if gather_only:
        return 1
    return max(1, cpu_threads() // max(1, processes_per_node))


def eval_dataset(cfg: Config, split: str, subset: int | None = None,
                 imbalance: float | None = None) -> EvalDataset:
    source = build_source(cfg.data, split, subset, imbalance)
    return EvalDataset(source, eval_transform(cfg.data.image_size, source.native_size),
                       cfg.data.strict)
