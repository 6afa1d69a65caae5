"""kNN accuracy while pretraining: `KnnMonitor(cfg)` is an engine monitor.

The engine calls `monitor(end)` with its EpochEnd record at every epoch end on every process
and writes the returned row to metrics.jsonl (`knn_top1` also goes on the
progress bar). The bank is the labelled training split (data.eval_train: the
images the run pretrains on, or the whole balanced split - the default under
data.imbalance), the queries the test split cut to knn.test_subset; the row also
holds top-1 per class and per many / medium / few group. Same library, same settings
and same numbers as eval/knn.py: for a checkpoint written at an epoch end, the
monitor's figure and the CLI's agree.
"""
from __future__ import annotations

import copy
import time

import torch
from accelerate.utils import broadcast_object_list
from torch import nn

from ssl_bf.config.schema import Config
from ssl_bf.data.pipeline import EvalDataset, default_workers, pretrain_class_counts
from ssl_bf.errors import UsageError
from ssl_bf.evaluation.features import eval_loader, extract_features
from ssl_bf.evaluation.groups import group_fields, padded
from ssl_bf.evaluation.job import EvalJob
from ssl_bf.evaluation.knn import knn_classify, knn_metrics
from ssl_bf.evaluation.splits import labelled_splits, num_classes
from ssl_bf.training.runtime import local_processes


def knn_datasets(cfg: Config) -> tuple[EvalDataset, EvalDataset]:
    """(bank, queries): the labelled train split (data.subset) and the test split
    (knn.test_subset); the bank must hold max(knn.k) samples."""
    bank, queries = labelled_splits(cfg, cfg.knn.test_subset)
    if max(cfg.knn.k) > len(bank):
        raise UsageError(f"knn.k: {max(cfg.knn.k)} neighbours asked for, but the bank holds only "
                         f"{len(bank)} images (lower knn.k or raise data.subset)")
    return bank, queries


def knn_evaluate(job: EvalJob, loaders, names: list[str] | None = None, probe=None) -> dict:
    """The metrics row (knn.knn_metrics + knn_seconds) for the job's backbone, on every
    process; with job.counts also top-1 per class and per many / medium / few group at the
    last k (ssl_bf/evaluation/groups.py); `probe`: the online probe, scored on the queries.

    Features are extracted by every process; the search runs on the main one
    (the others would only repeat it) and its row is broadcast.
    """
    cfg, backbone, accelerator, classes, counts = (job.cfg, job.backbone, job.accelerator,
                                                   job.classes, job.counts)
    start = time.time()
    nhwc = cfg.train.channels_last
    bank, bank_y = extract_features(backbone, loaders[0], accelerator, channels_last=nhwc)
    # raw features: the online probe classifies them; kNN compares them normalised
    raw, query_y = extract_features(backbone, loaders[1], accelerator, normalize=False,
                                    channels_last=nhwc)
    queries = torch.nn.functional.normalize(raw, dim=1)
    row = None
    if accelerator.is_main_process:
        result = knn_classify(bank, bank_y, queries, query_y, cfg.knn.k, cfg.knn.temperature,
                              classes, return_predictions=counts is not None)
        row = knn_metrics(result, cfg.knn.k)
        if counts is not None:
            pred = result["predictions"][int(cfg.knn.k[-1])]
            row.update(group_fields("knn", pred, query_y.cpu().numpy(), padded(counts, classes)))
            if names and len(names) == classes:  # for the report's per-class picture
                row["class_names"] = list(names)
        if probe is not None:  # the online probe (training/online_probe.py) on the same queries
            row["online_top1"] = probe.top1(raw, query_y)
        row["knn_seconds"] = round(time.time() - start, 2)
    if accelerator.num_processes > 1:
        row = broadcast_object_list([row], from_process=0)[0]
    return row


def rank0_copy(backbone: nn.Module, accelerator) -> nn.Module:
    """The backbone as the main process holds it, on every process.

    BatchNorm statistics differ between processes (DDP runs with
    broadcast_buffers=False) and the checkpoint is written by the main process;
    a copy with its tensors broadcast from there makes every process embed with
    the checkpoint's weights, and leaves the training module untouched.
    """
    if accelerator.num_processes == 1:
        return backbone
    twin = copy.deepcopy(backbone)
    with torch.no_grad():
        for tensor in twin.state_dict().values():
            flat = tensor if tensor.is_contiguous() else tensor.contiguous()  # channels_last
            torch.distributed.broadcast(flat, src=0)
            if flat is not tensor:
                tensor.copy_(flat)
    return twin


class KnnMonitor:
    """Engine monitor: kNN top-1 every `knn.every` epochs and at the end of training."""

    def __init__(self, cfg: Config):
        if cfg.knn.every < 1:
            raise UsageError(f"knn.every: the monitor needs a positive interval, got "
                             f"{cfg.knn.every}")
        self.cfg = cfg
        # Built now, before training starts, so a missing or unlabelled split (or
        # a k larger than the bank) stops the run at once, not after knn.every epochs.
        self.datasets = knn_datasets(cfg)
        self.classes = num_classes(*self.datasets)
        self.counts = pretrain_class_counts(cfg.data)
        self.names = list(self.datasets[1].load.source.classes or [])
        self.loaders = None  # prepared on first use: that needs the trainer's Accelerator

    def due(self, end) -> bool:
        # the last epoch end always (train.max_steps may end the run early: evaluate what it made)
        return end.epoch % self.cfg.knn.every == 0 or end.last

    def __call__(self, end) -> dict | None:
        """`end`: the engine's EpochEnd record (epoch, step, last, backbone, accelerator)."""
        if not self.due(end):
            return None
        acc = end.accelerator
        if self.loaders is None:
            workers = default_workers(self.cfg.data, local_processes())
            self.loaders = tuple(eval_loader(ds, acc, self.cfg.knn.batch_size, workers)
                                 for ds in self.datasets)
        backbone = rank0_copy(end.backbone, acc)
        job = EvalJob(self.cfg, backbone, acc, self.classes, self.counts)
        return knn_evaluate(job, self.loaders, self.names, end.probe)
