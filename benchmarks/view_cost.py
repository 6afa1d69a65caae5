"""What making the views on the device costs against the training step, at 32, 96 and 224 px.

For each size: the recipe's two views (BatchedViews, from uint8 images of that size) and
the recipe's optimizer step (the engine's OptimizerStep, as benchmarks/throughput.py builds
it) on the same batch, timed in alternation on this machine's device; the ratio is views /
step, medians over rounds. `--masked` times the row-masked path that a GPU takes (every row
computed, a mask selects) instead of the CPU's row subsets.

    python benchmarks/view_cost.py                  # 32 px mocov3, 96 px mocov3, 224 px R-50
    python benchmarks/view_cost.py --masked --rounds 3
"""
from __future__ import annotations

import argparse
import json

import timing  # benchmarks/ is sys.path[0]; it also puts the repo root on sys.path
import torch
from throughput import SslStep

from ssl_bf.config import load_config
from ssl_bf.data import batched_ops
from ssl_bf.data.pretrain_input import batched_views
from ssl_bf.training.runtime import make_accelerator

# (image size, recipe and overrides): CIFAR's quarter-width study model, an STL-10-sized
# ResNet-18, the ImageNet ResNet-50 recipe
CASES = ((32, ["recipe=mocov3", "model.width=0.25"]),
         (96, ["recipe=mocov3", "data.image_size=96", "model.width=1.0"]),
         (224, ["recipe=imagenet_mocov3_r50"]))


def measure(size: int, overrides: list[str], batch: int, rounds: int) -> dict:
    cfg = load_config([*overrides, f"train.batch_size={batch}", "knn.every=0",
                       "train.precision=no"])
    acc = make_accelerator(cfg)
    views = batched_views(cfg)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    index = torch.arange(batch)
    made = views(images, index, 0)
    step = SslStep(cfg, acc, set(), *made)
    step()  # warm-up: buffers, first-step allocations
    t_views, t_step = [], []
    for r in range(rounds):
        t_views.append(timing.seconds(lambda: views(images, index, r), acc.device))
        t_step.append(timing.seconds(step, acc.device))
    v, s = timing.median(t_views), timing.median(t_step)
    return {"size": size, "recipe": " ".join(overrides), "batch": batch, "views_s": v,
            "step_s": s, "views_over_step": v / s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--masked", action="store_true", help="the GPU's row-masked path")
    p.add_argument("--sizes", default="32,96,224")
    args = p.parse_args()
    batched_ops.MASKED_ON_CPU = args.masked
    print(f"# {timing.describe_device(timing.pick_device())}; batch {args.batch}; "
          f"{'masked rows (the GPU path)' if args.masked else 'row subsets (the CPU path)'}")
    wanted = {int(s) for s in args.sizes.split(",")}
    for size, overrides in CASES:
        if size in wanted:
            print(json.dumps(measure(size, overrides, args.batch, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
