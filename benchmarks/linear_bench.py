"""Cached linear probe on CIFAR-10: wall time of decoding, feature extraction and head training.

    python benchmarks/linear_bench.py                           # random-init ResNet-18, full width
    python benchmarks/linear_bench.py --checkpoint runs/mocov3  # a run directory or .safetensors
    python benchmarks/linear_bench.py train.channels_last=true linear.epochs=90

Runs the same code as `eval/linear.py linear.mode=cached` (ssl_bf.evaluation.linear)
on the full 50,000 / 10,000 split, with the recipe's linear.* settings (mocov3:
SGD lr 0.1 per 256, cosine, 90 epochs). Extra `key=value` arguments go to the config.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_bf.evaluation.job import EvalJob  # noqa: E402
from ssl_bf.evaluation.linear import linear_probe  # noqa: E402
from ssl_bf.evaluation.load import load_target  # noqa: E402
from ssl_bf.evaluation.splits import labelled_splits, num_classes  # noqa: E402
from ssl_bf.training.runtime import make_accelerator, set_threads  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/cifar10")
    p.add_argument("--checkpoint", default="random")
    p.add_argument("--recipe", default="mocov3")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args()
    argv = [f"checkpoint={args.checkpoint}", f"data.root={args.root}", "linear.mode=cached",
            *args.overrides]
    if args.checkpoint == "random" or args.checkpoint.endswith(".safetensors"):
        argv.insert(1, f"recipe={args.recipe}")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  cores {len(os.sched_getaffinity(0))}  "
          f"load {os.getloadavg()[0]:.2f}  {' '.join(argv)}", flush=True)
    target = load_target(argv)
    cfg = target.cfg
    acc = make_accelerator(cfg)
    threads = set_threads(cfg, acc)
    start = time.time()
    train, test = labelled_splits(cfg)
    decoded = time.time() - start
    backbone = target.backbone.to(acc.device)
    if cfg.train.channels_last:
        import torch

        backbone.to(memory_format=torch.channels_last)
    job = EvalJob(cfg, backbone, acc, num_classes(train, test),
                  workers=cfg.data.num_workers or 0, log=print)
    row = linear_probe(job, train, test)
    images = len(train) * cfg.linear.copies + len(test)
    total = decoded + row["extract_seconds"] + row["train_seconds"]
    print(f"backbone    {cfg.model.backbone} width {cfg.model.width} ({target.name}), "
          f"precision {cfg.train.precision}, channels_last {cfg.train.channels_last}, "
          f"{threads} threads")
    print(f"decode      {decoded:7.1f} s  ({len(train)} + {len(test)} images)")
    print(f"extract     {row['extract_seconds']:7.1f} s  ({images} images, "
          f"{images / row['extract_seconds']:.0f} images/s)")
    print(f"train head  {row['train_seconds']:7.1f} s  ({cfg.linear.epochs} epochs, "
          f"lr {cfg.linear.lr}, {cfg.linear.schedule})")
    print(f"total       {total:7.1f} s   top-1 {row['linear_top1']:.2f}  "
          f"top-5 {row['linear_top5']:.2f}")
    print(json.dumps({**row, "decode_seconds": round(decoded, 2),
                      "total_seconds": round(total, 2)}))


if __name__ == "__main__":
    main()
