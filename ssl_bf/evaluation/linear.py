"""Linear probe: a linear classifier on a frozen backbone's features.

    row = linear_probe(EvalJob(cfg, backbone, accelerator, num_classes), train_set, test_set)
    row["linear_top1"], row["linear_top5"]                    # percent, test split

Two modes (linear.mode):
  standard  the official protocol (MoCo main_lincls.py, v2 and v3): backbone frozen
            in eval mode, augmented training images (RandomResizedCrop + flip), SGD
            with momentum 0.9, the recipe's lr (per 256 samples, as in v3's
            main_lincls), step or cosine schedule per epoch, on every process
            (the head is DDP-wrapped by accelerate).
  cached    features extracted once - the plain training set, plus linear.copies-1
            augmented copies - and the same head trained on them with the same
            optimizer and schedule; each epoch visits every image once, in a
            random one of its copies. Minutes on a CPU instead of hours.
Raw pooled features in both (no normalisation, no BatchNorm in the head), so a
recipe's lr means the same thing in both modes. Both end with the
main_lincls.py sanity check (frozen.py): no backbone tensor may have moved.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from accelerate.utils import broadcast_object_list
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from ssl_bf.config.schema import Config, LinearConfig
from ssl_bf.data.counter_rng import mix_seed, seed_all
from ssl_bf.data.pipeline import EvalDataset
from ssl_bf.errors import UsageError
from ssl_bf.evaluation.features import eval_loader, eval_mode, extract_features
from ssl_bf.evaluation.frozen import check_unchanged, snapshot
from ssl_bf.evaluation.groups import group_fields, padded
from ssl_bf.evaluation.job import EvalJob

Log = Callable[[str], None]


def probe_lr_at(cfg: LinearConfig, epoch: int) -> float:
    """The epoch's lr: cfg.lr * batch/256, x0.1 at each milestone passed (step) or on a
    half cosine to 0 (cosine), as main_lincls.py's adjust_learning_rate."""
    base = cfg.lr * cfg.batch_size / 256
    if cfg.schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    return base * 0.1 ** sum(epoch >= m for m in cfg.milestones)


def make_head(dim: int, classes: int, seed: int) -> nn.Linear:
    """(B, dim) -> (B, classes) logits; weights N(0, 0.01), bias 0 (main_lincls.py)."""
    head = nn.Linear(dim, classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    return head


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(top-1, top-min(5, C)) in percent of (N, C) logits against (N,) labels."""
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    n = max(1, len(labels))
    return 100.0 * hits[:, 0].sum().item() / n, 100.0 * hits.any(dim=1).sum().item() / n


def probe_transform(size: int):
    """Training augmentation of the official probe: RandomResizedCrop + horizontal flip."""
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"])])


class AugmentedDataset(Dataset):
    """An EvalDataset's images through the probe augmentation: index -> (image, label, index).

    The crop of sample i in epoch e is a function of (seed, e, i) alone, so it is
    the same with any number of workers or processes. Set `.epoch` before iterating.
    """

    def __init__(self, base: EvalDataset, size: int, seed: int):
        self.base, self.transform, self.seed, self.epoch = base, probe_transform(size), seed, 0
        self.labels = base.labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, _ = self.base.load(index)
        # 7919: apart from pretraining's keys
        seed_all(mix_seed(self.seed, 7919, self.epoch, index))
        label = -1 if self.labels is None else int(self.labels[index])
        return self.transform(Image.fromarray(image)), label, index


def train_head(feats: torch.Tensor, labels: torch.Tensor, classes: int, cfg: LinearConfig,
               seed: int, log: Log | None = None) -> nn.Linear:
    """SGD on cached features.

    Args:
        feats: (copies, N, D) or (N, D) float32 features; labels: (N,) int64.
    Returns:
        the trained head, (B, D) -> (B, classes).
    """
    feats = feats if feats.dim() == 3 else feats[None]
    dim = feats.shape[2]
    with _threads_for(cfg.batch_size * dim * classes):
        return _sgd(feats, labels, make_head(dim, classes, seed), cfg, seed, log)


@contextlib.contextmanager
def _threads_for(macs: int) -> Iterator[None]:
    """One intra-op thread for small heads. A CIFAR step (256 x 512 x 10 multiply-adds)
    is too small to split: measured here, 0.19 s per 50k-sample epoch on one thread
    against 9.8 s on two while the other core was busy. ImageNet heads
    (256 x 2048 x 1000) keep every thread."""
    before = torch.get_num_threads()
    if macs < 2 ** 26:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sgd(feats: torch.Tensor, labels: torch.Tensor, head: nn.Linear, cfg: LinearConfig, seed: int,
         log: Log | None) -> nn.Linear:
    copies, n, _ = feats.shape
    opt = torch.optim.SGD(head.parameters(), lr=probe_lr_at(cfg, 0), momentum=0.9,
                          weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = probe_lr_at(cfg, epoch)
        order = torch.randperm(n, generator=gen)
        which = torch.randint(copies, (n,), generator=gen)  # one copy of each image per epoch
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(head(feats[which[idx], idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        _check_finite(total / n, epoch)
        if log is not None and (epoch + 1 == cfg.epochs
                                or (epoch + 1) % max(1, cfg.epochs // 10) == 0):
            log(f"epoch {epoch + 1}/{cfg.epochs}  loss {total / n:.4f}  "
                f"lr {probe_lr_at(cfg, epoch):.4g}")
    return head


def _check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise UsageError(f"linear.lr: the probe diverged (loss {loss} in epoch {epoch + 1}); "
                         "lower linear.lr")


def _raw_features(cfg: Config, backbone: nn.Module, acc, dataset: Dataset, workers: int):
    """(N, D) un-normalised features and (N,) labels of `dataset`, on every process."""
    loader = eval_loader(dataset, acc, cfg.linear.batch_size, workers)
    return extract_features(backbone, loader, acc, normalize=False,
                            channels_last=cfg.train.channels_last)


def test_row(logits: torch.Tensor, labels: torch.Tensor, counts) -> dict:
    """linear_top1/top5, and per class / per group top-1 when the class counts are known."""
    top1, top5 = topk_accuracy(logits, labels)
    row = {"linear_top1": round(top1, 4), "linear_top5": round(top5, 4)}
    if counts is not None:
        row.update(group_fields("linear", logits.argmax(1).numpy(), labels.numpy(),
                                padded(counts, logits.shape[1])))
    return row


def cached_probe(job: EvalJob, train_set: EvalDataset, test_set: EvalDataset) -> dict:
    """Extract once on every process; train the head on the main one; the row on all."""
    cfg, backbone, acc, workers = job.cfg, job.backbone, job.accelerator, job.workers
    start = time.time()
    train = [_raw_features(cfg, backbone, acc, train_set, workers)]
    for copy in range(1, cfg.linear.copies):
        augmented = AugmentedDataset(train_set, cfg.data.image_size, cfg.train.seed)
        augmented.epoch = copy
        train.append(_raw_features(cfg, backbone, acc, augmented, workers))
    test, test_y = _raw_features(cfg, backbone, acc, test_set, workers)
    extracted = time.time()
    row = None
    if acc.is_main_process:
        feats, labels = torch.stack([f for f, _ in train]), train[0][1]
        head = train_head(feats, labels, job.classes, cfg.linear, cfg.train.seed, job.log)
        with torch.no_grad():
            row = test_row(head(test), test_y, job.counts)
        row.update(extract_seconds=round(extracted - start, 2),
                   train_seconds=round(time.time() - extracted, 2))
    if acc.num_processes > 1:
        row = broadcast_object_list([row], from_process=0)[0]
    return row


def standard_probe(job: EvalJob, train_set: EvalDataset, test_set: EvalDataset) -> dict:
    """The official protocol: augmented images through the frozen backbone, every epoch."""
    cfg, backbone, acc, workers, log = job.cfg, job.backbone, job.accelerator, job.workers, job.log
    lin = cfg.linear
    if lin.batch_size % acc.num_processes:
        raise UsageError(f"linear.batch_size: {lin.batch_size} does not divide into "
                         f"{acc.num_processes} processes")
    start = time.time()
    augmented = AugmentedDataset(train_set, cfg.data.image_size, cfg.train.seed)
    loader = DataLoader(augmented, batch_size=lin.batch_size // acc.num_processes, shuffle=True,
                        num_workers=workers,
                        generator=torch.Generator().manual_seed(cfg.train.seed),
                        pin_memory=torch.cuda.is_available())
    head = make_head(backbone.dim, job.classes, cfg.train.seed)
    opt = torch.optim.SGD(head.parameters(), lr=probe_lr_at(lin, 0), momentum=0.9,
                          weight_decay=lin.weight_decay)
    backbone.to(acc.device)
    model, opt, loader = acc.prepare(head, opt, loader)  # DDP averages the head's gradients
    with eval_mode(backbone):
        for epoch in range(lin.epochs):
            loss = _standard_epoch(backbone, model, opt, loader, acc, cfg, epoch)
            _check_finite(loss, epoch)
            if log is not None:
                log(f"epoch {epoch + 1}/{lin.epochs}  loss {loss:.4f}  "
                    f"lr {probe_lr_at(lin, epoch):.4g}")
    trained = time.time()
    test, test_y = _raw_features(cfg, backbone, acc, test_set, workers)
    with torch.no_grad():
        row = test_row(acc.unwrap_model(model).cpu()(test), test_y, job.counts)
    return {**row, "train_seconds": round(trained - start, 2),
            "extract_seconds": round(time.time() - trained, 2)}


def _standard_epoch(backbone: nn.Module, head: nn.Module, opt, loader, acc, cfg: Config,
                    epoch: int) -> float:
    """One pass over the augmented training set; the mean loss over all processes."""
    lin = cfg.linear
    for group in opt.param_groups:
        group["lr"] = probe_lr_at(lin, epoch)
    loader.dataset.epoch = epoch  # read by the workers this iteration starts
    total = torch.zeros(2, device=acc.device)
    for images, labels, _ in loader:
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), acc.autocast():
            feats = backbone(images).float()  # frozen: no graph through the trunk
        loss = F.cross_entropy(head(feats), labels)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        count = torch.tensor(float(len(labels)), device=acc.device)
        total += torch.stack([loss.detach() * count, count])
    total = acc.reduce(total, reduction="sum")
    return (total[0] / total[1].clamp(min=1)).item()


def linear_probe(job: EvalJob, train_set: EvalDataset, test_set: EvalDataset) -> dict:
    """linear.mode's probe, then the sanity check; {'linear_top1', 'linear_top5', ...};
    with job.counts also per class and per group."""
    before = snapshot(job.backbone)
    probe = cached_probe if job.cfg.linear.mode == "cached" else standard_probe
    row = probe(job, train_set, test_set)
    check_unchanged(job.backbone, before)
    return row
