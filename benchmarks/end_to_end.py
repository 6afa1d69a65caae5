"""End-to-end training speed: batched views on the device vs PIL workers vs lightly's example.

Three ways to train MoCo-v2 on the same machine, run in alternating rounds so load drifts
hit them alike, each a real short training run read from its metrics.jsonl (the first
logged window, which holds start-up, dropped):

  - ssl_bf, `aug.batched=true`: uint8 images from the loader, views made on the device;
  - ssl_bf, `aug.batched=false`: lightly's PIL transforms in DataLoader workers (auto count);
  - benchmarks/lightly_loop.py: a loop written as lightly's MoCo example (MoCoV2Transform in
    a DataLoader with one worker per core).

Next to them, the model step alone on synthetic inputs (benchmarks/throughput.py's step, the
end-to-end ceiling). Image pairs/s throughout.

    python benchmarks/end_to_end.py --width 0.25 --steps 40 --rounds 3
    python benchmarks/end_to_end.py --width 1.0 --steps 8 --rounds 2 --log-every 2
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import timing  # puts the repo root on sys.path
from input_pipeline import model_only_rate, train_run


def lightly_run(args, out: str) -> dict:
    cmd = [sys.executable, os.path.join(timing.REPO_ROOT, "benchmarks", "lightly_loop.py"),
           "--root", args.root, "--subset", str(args.batch * (args.steps + 2)), "--epochs", "1",
           "--max-steps", str(args.steps), "--batch-size", str(args.batch),
           "--width", str(args.width),
           "--workers", str(timing.cpu_count()), "--log-every", str(args.log_every), "--out", out,
           "--precision", args.precision]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"error: lightly loop failed:\n{proc.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rates = [json.loads(line)["samples_per_s"] for line in f]
    return {"samples_per_s": timing.median(rates[1:] or rates), "windows": rates}


def ssl_bf_run(args, batched: bool, out: str) -> dict:
    run_args = copy.copy(args)
    run_args.set = [*args.set, f"aug.batched={str(batched).lower()}"]
    workers = 1 if batched else timing.cpu_count()  # the defaults ssl_bf picks on this machine
    return train_run(run_args, workers, None, out)


def views_alone(args, repeats: int = 10) -> dict:
    """Image pairs/s of making the two views alone (no model), batched on the device vs one
    DataLoader worker's PIL transforms (lightly's), on real CIFAR-10 images."""
    import torch
    from PIL import Image

    from ssl_bf.config import load_config
    from ssl_bf.data.pipeline import build_source
    from ssl_bf.data.pretrain_input import batched_views
    from ssl_bf.data.transforms import pretrain_transform

    cfg = load_config([f"recipe={args.method}", f"data.root={args.root}"])
    source = build_source(cfg.data, "pretrain", args.batch)
    images = torch.stack([torch.from_numpy(source.load(i).transpose(2, 0, 1).copy())
                          for i in range(args.batch)])
    device = timing.pick_device()  # the views are made where training runs
    images, index = images.to(device), torch.arange(args.batch, device=device)
    views = batched_views(cfg)
    views(images, index, 0)
    times = []
    for r in range(repeats):
        times.append(timing.seconds(lambda: views(images, index, r), device))
    pil = pretrain_transform(cfg.method.name, cfg.data.image_size, cfg.aug)
    torch.set_num_threads(1)  # as in a loader worker
    pil_images = [Image.fromarray(source.load(i)) for i in range(args.batch)]
    pil_time = timing.seconds(lambda: [pil(im) for im in pil_images], torch.device("cpu"))
    torch.set_num_threads(timing.cpu_count())
    return {"batched_pairs_per_s": args.batch / timing.median(times),
            "pil_pairs_per_s_per_worker": args.batch / pil_time}


MODES = {"ssl_bf batched views": lambda a, out: ssl_bf_run(a, True, out),
         "ssl_bf PIL workers": lambda a, out: ssl_bf_run(a, False, out),
         "lightly example loop": lightly_run}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.path.join(timing.REPO_ROOT, "data", "cifar10"))
    p.add_argument("--method", default="mocov2")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model-repeats", type=int, default=5)
    p.add_argument("--precision", choices=["no", "bf16"], default="no", help="all three loops")
    p.add_argument("--set", action="append", default=[], help="key=value for the ssl_bf runs")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    args.set = [f"train.precision={args.precision}", *args.set]
    rates = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for k, (mode, run) in enumerate(MODES.items()):
                result = run(args, os.path.join(tmp, f"round{r}_mode{k}"))
                rates[mode].append(result["samples_per_s"])
                print(f"round {r}: {mode}: {result['samples_per_s']:.1f} pairs/s", flush=True)
    alone = views_alone(args)
    step_alone = model_only_rate(args, None)
    med = {m: timing.median(v) for m, v in rates.items()}
    lines = [f"{args.method}, ResNet-18 width {args.width}, batch {args.batch}, "
             f"{args.steps} steps, {args.rounds} rounds, "
             f"{timing.describe_device(timing.pick_device())}",
             "| | image pairs/s (median) | per round | / step alone | / lightly loop |",
             "|---|---:|---|---:|---:|"]
    for m, v in med.items():
        lines.append(f"| {m} | {v:.1f} | {', '.join(f'{x:.0f}' for x in rates[m])} | "
                     f"{v / step_alone:.2f} | {v / med['lightly example loop']:.2f} |")
    lines.append(f"| model step alone | {step_alone:.1f} | | 1.00 | |")
    lines.append(f"views alone (no model): batched on the device "
                 f"{alone['batched_pairs_per_s']:.0f} pairs/s "
                 f"({timing.cpu_count()} threads), lightly's PIL transforms "
                 f"{alone['pil_pairs_per_s_per_worker']:.0f} pairs/s per worker")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates": rates, "medians": med, "step_alone": step_alone,
                       "views_alone": alone, "args": vars(args),
                       "device": timing.describe_device(timing.pick_device())}, f, indent=1)


if __name__ == "__main__":
    main()
