"""What pretraining reads: a loader of one batch type, and the one place views are made.

Augmentation is a pure function of (seed, epoch, index). With `aug.batched: false` every
sample seeds the RNGs its PIL transform draws from (torch, random, numpy - lightly's blur and
solarize use numpy) and the worker makes its views; with `aug.batched: true` the worker hands
over the uint8 image (or, for images of mixed sizes, each view's crop of it) and the views are
made on the training device from counter-based draws (data/batched_views.py). Either way a
batch is a `Batch`, and `PretrainInput.views` turns it into the step's list of views on the
device - as many as the transform makes - the same with 0 or 8 workers, on 1 or 2 processes,
and after a resume in mid-epoch.
"""
from __future__ import annotations

import signal
from typing import Iterator, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ssl_bf.config.schema import Config
from ssl_bf.data.batched_views import BatchedViews, ViewCrops, loader_boxes
from ssl_bf.data.counter_rng import mix_seed, seed_all
from ssl_bf.data.images import ImageSource
from ssl_bf.data.pipeline import RobustLoader, default_workers
from ssl_bf.data.sampler import GlobalBatchSampler
from ssl_bf.data.transforms import pretrain_transform


class Batch(NamedTuple):
    """A loader batch (default_collate keeps the type). `images`: (B, V, 3, S, S) float views
    made in the workers, uint8 (B, 3, H, W) images, or uint8 (B, V, 3, S, S) crops of them."""
    images: torch.Tensor
    epoch: torch.Tensor  # (B,), the same epoch throughout
    index: torch.Tensor  # (B,) image indices in the pretraining split
    bad: torch.Tensor  # (B,) the unreadable image each one replaced, or -1


class KeyedDataset(Dataset):
    """Pretraining images read by key (epoch, index); an unreadable one is replaced."""

    def __init__(self, source: ImageSource, seed: int, strict: bool = False):
        self.load = RobustLoader(source, strict)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.load.source)


class ViewsDataset(KeyedDataset):
    """key (epoch, index) -> Batch item with the views lightly's transform made here."""

    def __init__(self, source: ImageSource, transform, seed: int, strict: bool = False):
        super().__init__(source, seed, strict)
        self.transform = transform

    def __getitem__(self, key) -> Batch:
        epoch, index = key
        image, bad = self.load(index)
        seed_all(mix_seed(self.seed, epoch, index))
        return Batch(torch.stack(self.transform(Image.fromarray(image))), epoch, index, bad)


class ImagesDataset(KeyedDataset):
    """key (epoch, index) -> Batch item with the uint8 image (3, H, W).

    Images of mixed sizes cannot be stacked: for those (`views` given) each view's random
    resized crop is cut here, in the worker, with the parameters the device would draw - a
    JPEG decoded only as large as the crops need (ViewCrops) - and the item holds the uint8
    crops (V, 3, S, S).
    """

    def __init__(self, source: ImageSource, seed: int, views: BatchedViews | None = None,
                 strict: bool = False):
        super().__init__(source, seed, strict)
        self.views = views

    def __getitem__(self, key, known=None, data: bytes | None = None) -> Batch:
        epoch, index = key
        crops = None if self.views is None else ViewCrops(self.views, epoch, index, known)
        image, bad = self.load(index, None if crops is None else crops.reduction, data)
        if crops is not None:  # cut from the image in its decoded (HWC) memory
            image = torch.from_numpy(np.require(image, requirements="W")).permute(2, 0, 1)
            return Batch(crops(image), epoch, index, bad)
        return Batch(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                     epoch, index, bad)


    def __getitems__(self, keys: list) -> list[Batch]:
        """A loader batch at once (torch's DataLoader asks for it so): the crop boxes of all
        its images are drawn together, from the sizes in their files' headers. Each file is
        read once, for its size and its pixels."""
        if self.views is None:
            return [self[key] for key in keys]
        source, epoch = self.load.source, int(keys[0][0])
        index = [int(i) for _, i in keys]
        stored = [source.stored(i) for i in index]
        sizes = [source.size(i, data) for i, data in zip(index, stored)]
        boxes = loader_boxes(self.views, epoch, index,
                             [size or (1, 1) for size in sizes])  # unreadable: its replacement's
        return [self.__getitem__(key, None if size is None else (size, b), data)
                for key, size, b, data in zip(keys, sizes, boxes, stored)]


def batched_views(cfg: Config) -> BatchedViews:
    """The device-side view maker with the recipe's lightly transform's parameters."""
    transform = pretrain_transform(cfg.method.name, cfg.data.image_size, cfg.aug)
    return BatchedViews.from_lightly(transform, cfg.train.seed)


def crops_in_loader(cfg: Config, source: ImageSource) -> bool:
    """Batched views of images of mixed sizes: the loader cuts each view's crop."""
    return cfg.aug.batched and source.native_size is None


def loader_workers(cfg: Config, source: ImageSource, processes_per_node: int) -> int:
    """default_workers, knowing whether the workers only gather images already in memory."""
    gather_only = (cfg.aug.batched and source.arrays is not None
                   and not crops_in_loader(cfg, source))
    return default_workers(cfg.data, processes_per_node, gather_only)


def ignore_stop_signals(_worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: the loader workers leave SIGINT to the training
    process, which finishes its step, checkpoints and ends them (training/stop_signals.py).
    SIGTERM keeps its default: multiprocessing ends daemonic workers with it at exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PretrainInput:
    """This process's pretraining input: `epoch(e, step)` iterates its micro-batches from
    that step of epoch e; `views(batch)` makes the step's views on `device`."""

    def __init__(self, cfg: Config, source: ImageSource, rank: int, world: int, workers: int,
                 device: torch.device):
        self.device, self.channels_last = device, cfg.train.channels_last
        self.batched = batched_views(cfg) if cfg.aug.batched else None
        if self.batched is not None:
            crop_here = self.batched if crops_in_loader(cfg, source) else None
            dataset = ImagesDataset(source, cfg.train.seed, crop_here, cfg.data.strict)
        else:
            transform = pretrain_transform(cfg.method.name, cfg.data.image_size, cfg.aug)
            dataset = ViewsDataset(source, transform, cfg.train.seed, cfg.data.strict)
        self.sampler = GlobalBatchSampler(len(source), cfg.train.batch_size, cfg.train.accumulate,
                                          rank, world, cfg.train.seed, epoch=0)
        # Workers persist across epochs: the sampler runs in this process, so they need not
        # be re-forked to learn the new order.
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                                 pin_memory=torch.cuda.is_available(),
                                 persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None,
                                 worker_init_fn=ignore_stop_signals)

    def epoch(self, epoch: int, step: int = 0) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch, step)
        return iter(self.loader)

    def views(self, batch: Batch) -> list[torch.Tensor]:
        """The batch's views on the device: made there under aug.batched, else moved there."""
        images = batch.images.to(self.device, non_blocking=True)
        if self.batched is not None:
            views = self.batched(images, batch.index, int(batch.epoch[0]))  # a CPU tensor: no sync
        else:
            views = images.unbind(1)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return [v.contiguous(memory_format=layout) for v in views]
