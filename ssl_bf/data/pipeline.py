"""Datasets and loaders for pretraining (two augmented views) and evaluation.

Augmentation is a pure function of (seed, epoch, index). With `aug.batched: false`
every sample seeds the RNGs its PIL transform draws from (torch, random, numpy -
lightly's blur and solarize use numpy) before it is augmented in a worker; with
`aug.batched: true` the loader yields uint8 images and the views are made on the
training device from counter-based draws (ssl_bf/data/batched_views.py). Either
way the views are the same with 0 or 8 workers, on 1 or 2 processes, and after a
resume in mid-epoch.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ssl_bf.config.schema import Config, DataConfig
from ssl_bf.data.batched_views import BatchedViews, crop_pair
from ssl_bf.data.datasets import open_split
from ssl_bf.data.images import (BadImage, ImageSource, cpu_threads, decode_all, long_tail_first,
                                stratified_first)
from ssl_bf.data.sampler import GlobalBatchSampler
from ssl_bf.data.transforms import eval_transform, pretrain_transform
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
        source = source.select(long_tail_first(source.labels, imbalance, len(source.classes) or None))
    if subset is not None:
        source = source.select(stratified_first(source.labels, subset, len(source)))
    return source


def pretrain_split(cfg: DataConfig) -> ImageSource:
    """What the run pretrains on: data.subset or data.imbalance applied."""
    return cut_split(cfg, "pretrain", cfg.subset, cfg.imbalance)


def class_counts(source: ImageSource) -> np.ndarray:
    """Images per class of a labelled source (zeros for classes it lacks)."""
    return np.bincount(source.labels, minlength=max(len(source.classes), int(source.labels.max()) + 1))


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


def mix_seed(*parts: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps): neighbouring keys get unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h


def seed_all(seed: int) -> None:
    """Seed the CPU RNGs an augmentation may draw from."""
    torch.random.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)


class RobustLoader:
    """Load image i; an unreadable one is replaced by the next readable image.

    Returns (image, index of the unreadable file that was replaced or -1), so
    the training process - not a worker - counts replacements and names each
    bad file once. Under data.strict the first unreadable file is an error.
    """

    def __init__(self, source: ImageSource, strict: bool):
        self.source, self.strict = source, strict

    def __call__(self, index: int) -> tuple[np.ndarray, int]:
        first_bad = -1
        for skipped in range(len(self.source)):
            i = (index + skipped) % len(self.source)
            try:
                return self.source.load(i), first_bad
            except BadImage as err:
                if self.strict:
                    raise UsageError(f"data.strict: unreadable image {err}") from None
                first_bad = i if first_bad < 0 else first_bad
        raise UsageError(f"data.root: no readable image in {self.source.description}")


class ViewsDataset(Dataset):
    """key (epoch, index) -> (view1, view2, index, replaced bad index or -1)."""

    def __init__(self, source: ImageSource, transform, seed: int, strict: bool = False):
        self.load = RobustLoader(source, strict)
        self.transform, self.seed = transform, seed

    def __len__(self) -> int:
        return len(self.load.source)

    def __getitem__(self, key):
        epoch, index = key
        image, bad = self.load(index)
        seed_all(mix_seed(self.seed, epoch, index))
        v1, v2 = self.transform(Image.fromarray(image))
        return v1, v2, index, bad


class ImagesDataset(Dataset):
    """key (epoch, index) -> (uint8 image (3, H, W), epoch, index, replaced bad index or -1).

    Images of mixed sizes cannot be stacked: for those (native_size None) each view's
    random resized crop is cut here, in the worker, with the parameters the device
    would draw, and the item is the uint8 pair (2, 3, S, S) of crops.
    """

    def __init__(self, source: ImageSource, seed: int, views: BatchedViews | None = None,
                 strict: bool = False):
        self.load = RobustLoader(source, strict)
        self.seed, self.views = seed, views

    def __len__(self) -> int:
        return len(self.load.source)

    def __getitem__(self, key):
        epoch, index = key
        image, bad = self.load(index)
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.views is not None:
            image = crop_pair(image, self.views, epoch, index)
        return image, epoch, index, bad


def batched_views(cfg: Config) -> BatchedViews:
    """The device-side view maker with the recipe's lightly transform's parameters."""
    transform = pretrain_transform(cfg.method.name, cfg.data.image_size, cfg.aug)
    return BatchedViews.from_lightly(transform, cfg.train.seed)


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


def default_workers(cfg: DataConfig, processes_per_node: int, batched: bool = False) -> int:
    if cfg.num_workers is not None:
        return cfg.num_workers
    # Decoded images in memory make augmentation the whole input cost: ~440 pairs/s
    # per worker for MoCoV2Transform, ~580 for the BYOL pair (BENCHMARKS.md §3). A
    # quarter-width ResNet-18 step eats ~330 pairs/s on 2 cores, so augmentation and
    # compute share the cores: one worker per core per process, measured best on 2 cores
    # (2 workers 207 pairs/s end to end, 1 worker 188, 0 workers 181), capped at 8.
    # With batched views on the device a worker only gathers uint8 images: one is enough.
    if batched:
        return 1
    return max(1, min(8, cpu_threads() // max(1, processes_per_node)))


def pretrain_loader(cfg: Config, source: ImageSource, rank: int, world: int,
                    workers: int) -> DataLoader:
    """This process's micro-batches; call `loader.batch_sampler.set_epoch(e, step)`
    before iterating. Workers persist across epochs (the sampler runs in this
    process, so they need not be re-forked to learn the new order)."""
    if cfg.aug.batched:
        mixed_sizes = source.native_size is None
        dataset = ImagesDataset(source, cfg.train.seed, batched_views(cfg) if mixed_sizes else None,
                                cfg.data.strict)
    else:
        dataset = ViewsDataset(source, pretrain_transform(cfg.method.name, cfg.data.image_size, cfg.aug),
                               cfg.train.seed, cfg.data.strict)
    sampler = GlobalBatchSampler(len(source), cfg.train.batch_size, cfg.train.accumulate, rank,
                                 world, cfg.train.seed, epoch=0)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None)


def eval_dataset(cfg: Config, split: str, subset: int | None = None,
                 imbalance: float | None = None) -> EvalDataset:
    source = build_source(cfg.data, split, subset, imbalance)
    return EvalDataset(source, eval_transform(cfg.data.image_size, source.native_size),
                       cfg.data.strict)
