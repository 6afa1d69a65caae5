"""Input pipeline speed: augmented samples/s per worker, and whether training is input-bound.

Part 1 times the augmentations one DataLoader worker runs (one process, one
torch thread, as in a worker), on CIFAR-10 images already decoded in memory by
ssl_bf.data.pipeline.build_source: MoCoV2Transform (mocov2 recipe), the BYOL pair
(mocov3 recipe) and the eval transform, each through ssl_bf's datasets
(ViewsDataset seeds torch/random/numpy per sample) and bare (the lightly
transform on a PIL image), to show what the seeding costs. Modes alternate in
chunks, so machine load drifts hit them alike; figures are medians over chunks.

Part 2 runs the real training loop (`python ssl_bf/pretrain.py ... train.max_steps=N`)
with data.num_workers = 0, 1, 2 and reads samples_per_s from its metrics.jsonl
(the first logged window, which holds worker start-up, is dropped), next to the
model step alone on synthetic inputs (benchmarks/throughput.py's step).

    python benchmarks/input_pipeline.py --samples 3000 --steps 40
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import timing  # puts the repo root on sys.path
import torch
from PIL import Image

from ssl_bf.config import load_config
from ssl_bf.config.schema import DataConfig
from ssl_bf.data.pipeline import EvalDataset, build_source
from ssl_bf.data.pretrain_input import ViewsDataset
from ssl_bf.data.transforms import eval_transform, pretrain_transform


def transforms() -> dict:
    """name -> (transform, how a dataset item is built from it)."""
    v2, v3 = load_config(["recipe=mocov2"]), load_config(["recipe=mocov3"])
    return {"MoCoV2Transform (mocov2 recipe)": (pretrain_transform("mocov2", 32, v2.aug), "views"),
            "BYOL pair (mocov3 recipe)": (pretrain_transform("mocov3", 32, v3.aug), "views"),
            "eval transform": (eval_transform(32, 32), "eval")}


def modes(source, transform, kind: str) -> dict:
    """The ways one sample is produced: through ssl_bf's dataset, and bare."""
    if kind == "views":
        dataset = ViewsDataset(source, transform, seed=0)
        through = lambda i: dataset[(0, i)]  # noqa: E731 (epoch 0, index i)
    else:
        dataset = EvalDataset(source, transform)
        through = dataset.__getitem__
    bare = lambda i: transform(Image.fromarray(source.load(i)))  # noqa: E731
    return {"ssl_bf dataset": through, "bare transform": bare}


def augment_rates(source, samples: int, chunk: int) -> list[dict]:
    torch.set_num_threads(1)  # a DataLoader worker runs with one torch thread
    rows = []
    for name, (transform, kind) in transforms().items():
        fns = modes(source, transform, kind)
        for fn in fns.values():  # warm-up (imports, first-call costs)
            [fn(i) for i in range(min(50, len(source)))]
        rates = {m: [] for m in fns}
        for start in range(0, samples, chunk):
            for mode, fn in fns.items():
                idx = [(start + j) % len(source) for j in range(chunk)]
                t = time.perf_counter()
                for i in idx:
                    fn(i)
                rates[mode].append(chunk / (time.perf_counter() - t))
        for mode, r in rates.items():
            rows.append({"transform": name, "mode": mode, "samples_per_s": timing.median(r),
                         "chunks": len(r)})
    return rows


def train_run(args, workers: int, threads: int | None, out: str) -> dict:
    """One short training run; samples/s from its metrics.jsonl."""
    cmd = [sys.executable, os.path.join(timing.REPO_ROOT, "ssl_bf", "pretrain.py"),
           f"recipe={args.method}", f"model.width={args.width}", f"data.root={args.root}",
           # one epoch: no epoch-end checkpoint inside
           f"data.subset={args.batch * (args.steps + 2)}",
           f"train.batch_size={args.batch}", f"train.max_steps={args.steps}",
           f"train.log_every={args.log_every}", f"data.num_workers={workers}",
           f"train.output_dir={out}", "knn.every=0",
           # this part sizes the PIL workers; end_to_end.py times batched views
           "aug.batched=false",
           *args.set]
    if threads:
        cmd.append(f"train.threads={threads}")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"error: training run failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rates = [r["samples_per_s"] for r in map(json.loads, f) if "samples_per_s" in r]
    return {"workers": workers, "threads": threads,
            "samples_per_s": timing.median(rates[1:] or rates),
            "windows": rates, "wall_s": wall}


def model_only_rate(args, threads: int | None) -> float:
    """The model step alone (synthetic inputs in memory), as benchmarks/throughput.py times it,
    with the torch threads of a training run (None: every core, as ssl_bf.training.runtime does)."""
    import throughput

    torch.set_num_threads(threads or timing.cpu_count())
    argv = ["--methods", args.method, "--width", str(args.width), "--batch", str(args.batch),
            "--repeats", str(args.model_repeats), "--warmup", "1", "--json", ""]
    for kv in args.set:
        argv += ["--set", kv]
    targs = throughput.parse_args(argv)
    targs.steps_per_sample = 1
    device = timing.pick_device()
    variants = throughput.build_variants(targs, device)
    timing.count_and_warm(variants, targs, device)
    timing.run_rounds(variants, targs, device)
    return args.batch / timing.median(variants[0].times)


def parse_settings(text: str) -> list[tuple[int, int | None]]:
    """'0,1,2,1:1' -> [(0, None), (1, None), (2, None), (1, 1)]: workers[:train.threads]."""
    out = []
    for item in text.split(","):
        w, _, t = item.partition(":")
        out.append((int(w), int(t) if t else None))
    return out


def report(aug: list[dict], runs: list[dict], model: dict, args) -> str:
    lines = ["| transform | mode | samples/s per worker (2 views; eval: 1 image) |",
             "|---|---|---:|"]
    lines += [f"| {r['transform']} | {r['mode']} | {r['samples_per_s']:.0f} |" for r in aug]
    if runs:
        lines += ["", f"end-to-end: {args.method}, resnet18 width {args.width}, "
                      f"batch {args.batch}, {args.steps} steps (first log window dropped)",
                  "| data.num_workers | train.threads | samples/s | windows |",
                  "|---:|---:|---:|---|"]
        lines += [f"| {r['workers']} | {r['threads'] or 'auto'} | {r['samples_per_s']:.1f} | "
                  + ", ".join(f"{w:.0f}" for w in r["windows"]) + " |" for r in runs]
    if model and runs:
        lines += [""] + [f"model step alone (synthetic inputs), train.threads={t or 'auto'}: "
                         f"{rate:.1f} samples/s" for t, rate in model.items()]
        for r in runs:  # each run against the model alone at its own thread count
            share = r["samples_per_s"] / model[r["threads"]]
            verdict = "input-bound" if share < 0.9 else "not input-bound"
            lines.append(f"data.num_workers={r['workers']}, "
                         f"train.threads={r['threads'] or 'auto'}: "
                         f"{100 * share:.0f}% of the model-only rate -> {verdict}")
        best = max(runs, key=lambda r: r["samples_per_s"])
        lines.append(f"fastest: data.num_workers={best['workers']} "
                     f"train.threads={best['threads'] or 'auto'} "
                     f"({best['samples_per_s']:.1f} samples/s)")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.path.join(timing.REPO_ROOT, "data", "cifar10"))
    p.add_argument("--samples", type=int, default=3000, help="samples per transform and mode")
    p.add_argument("--chunk", type=int, default=250)
    p.add_argument("--method", default="mocov2", help="recipe for the end-to-end runs")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=5)
    # 1:1 - one worker and one compute thread - keeps 2 cores from being oversubscribed
    p.add_argument("--settings", default="0,1,2,1:1",
                   help="data.num_workers[:train.threads], comma-separated")
    p.add_argument("--model-repeats", type=int, default=5)
    p.add_argument("--set", action="append", default=[], help="key=value for the training runs")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--json", default="benchmarks/results/input_pipeline.json")
    args = p.parse_args(argv)
    source = build_source(DataConfig(root=args.root), "pretrain", max(args.samples, 100))
    aug = augment_rates(source, args.samples, args.chunk)
    runs, model = [], {}
    if not args.skip_train:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [train_run(args, w, t, os.path.join(tmp, f"w{w}t{t}"))
                    for w, t in parse_settings(args.settings)]
        model = {t: model_only_rate(args, t) for t in dict.fromkeys(r["threads"] for r in runs)}
    print(report(aug, runs, model, args))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"augment": aug, "train": runs,
                       "model_only_samples_per_s": {str(t or "auto"): r for t, r in model.items()},
                       "args": vars(args), "device": timing.describe_device(timing.pick_device())},
                      f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
