"""Do a MoCo-v2 run's keys carry a signature of the step they were made in?

With `bf.keys` the key encoder runs the query side's BatchFormer. A key made in the same step
as a query may share with it whatever the layer adds from their batch, while the queue's
negatives all come from earlier steps; such a batch signature would lower the loss without
telling images apart (the kind of leak shuffle-BN closes for BatchNorm, He et al. 2020 §3.3).

For each run directory, on two batches A and B of its pretraining images (views made as in
training, the last checkpoint, training mode), per (query stream, key stream) pairing:

  positive  mean cos(q_i, k_i)                     the other view of the same image
  mates     mean cos(q_i, k_j), j != i, both in A  same-step keys (the queue never holds them)
  others    mean cos(q_i, k_j), k_j from batch B   another step's keys (what the queue holds)

mates - others > 0 is the signature. `--init` measures the run's config at initialisation.

    python experiments/batch_signature.py experiments/out/study_cpu/v2_authors_whole/seed0 \\
        --root data/cifar10
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from ssl_bf.config import load_config
from ssl_bf.config.load import read_saved_config
from ssl_bf.data.pipeline import build_source
from ssl_bf.data.pretrain_input import batched_views
from ssl_bf.methods import build_method
from ssl_bf.rundir.checkpoint import find_latest, load_checkpoint
from ssl_bf.training.online_probe import OnlineProbe

STREAMS = ("plain", "bf")


def load_run(run: Path, root: str | None, init: bool):
    """(config, method with the run's last weights, or seeded initial ones with `init`)."""
    cfg = load_config([f"data.root={root}"] if root else [],
                      base=read_saved_config(run / "config.yaml"))
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg)
    if not init:
        state, _, _ = load_checkpoint(find_latest(run / "checkpoints"))
        method.load_state_dict({k: v for k, v in state.items()
                                if not k.startswith(OnlineProbe.PREFIX)})
    return cfg, method


def pairing_stats(q: torch.Tensor, k_same: torch.Tensor, k_other: torch.Tensor) -> dict:
    """Mean cosines (rows already unit length) of the positives, the same-step mates and
    another step's keys, and the signature mates - others."""
    sim = q @ k_same.T
    mates = sim[~torch.eye(len(q), dtype=torch.bool)]
    stats = {"positive": sim.diag().mean().item(), "mates": mates.mean().item(),
             "others": (q @ k_other.T).mean().item()}
    stats["signature"] = stats["mates"] - stats["others"]
    return stats


@torch.no_grad()
def measure(cfg, method, seed: int = 0) -> dict:
    """'q_stream/k_stream' -> pairing_stats on two batches of the pretraining images."""
    source = build_source(cfg.data, "pretrain", cfg.data.subset, cfg.data.imbalance)
    b = cfg.train.batch_size
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:2 * b]
    images = torch.stack([torch.from_numpy(source.load(int(i)).transpose(2, 0, 1).copy())
                          for i in order])
    make_views = batched_views(cfg)
    method.train()
    torch.manual_seed(seed)
    made = []
    for part in (slice(0, b), slice(b, 2 * b)):
        x1, x2 = make_views(images[part], order[part], 0)
        queries = [F.normalize(s, dim=1) for s in method.query(x1, True)]
        made.append((queries, method.key(x2, method.query.stream(True), cfg.bf.position)))
    (qa, ka), (_, kb) = made
    return {f"{STREAMS[s]}/{STREAMS[t]}": pairing_stats(qa[s], ka[t], kb[t])
            for s in range(len(qa)) for t in range(len(ka))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--root", default=None, help="data.root, if not the one in config.yaml")
    p.add_argument("--init", action="store_true", help="the run's config at initialisation")
    args = p.parse_args(argv)
    print("| run | bf.scope | pairing (q/k) | positive | mates | others | mates - others |")
    print("|---|---|---|---:|---:|---:|---:|")
    for run in args.runs:
        cfg, method = load_run(run, args.root, args.init)
        for pairing, s in measure(cfg, method).items():
            print(f"| {run} | {cfg.bf.scope} | {pairing} | {s['positive']:.3f} | "
                  f"{s['mates']:.3f} | {s['others']:.3f} | {s['signature']:+.3f} |")


if __name__ == "__main__":
    main()
