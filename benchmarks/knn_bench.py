"""kNN classification speed and peak memory: ssl_bf's faiss kNN vs lightly's knn_predict vs torch.

    python benchmarks/knn_bench.py                  # 50,000 x 512 bank, 10,000 queries, k=200
    python benchmarks/knn_bench.py --large          # also the 500,000 bank

Features: seeded random unit vectors around 10 random class centres (so the vote
matters and kNN accuracy is well above chance). Each (variant, repeat) runs in
its own subprocess, the variants alternating within every repeat, so one
variant's memory or warm caches never help another. Per run: wall time of the
classification call alone (index build included, imports and data loading not)
and peak memory = the resident high-water mark (VmHWM, see peak_rss) after the
call minus the resident set before it; the input features are loaded before, so
they are not in the delta. The median over repeats is reported; predictions
(top-1 class at k) must be identical to faiss's. lightly.utils.benchmarking imports
pytorch_lightning, so it is imported only in the lightly subprocesses.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def make_data(path: str, bank: int, queries: int, dim: int, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    for name, n in (("bank", bank), ("queries", queries)):
        labels = rng.integers(0, classes, n)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x += 0.12 * centres[labels]  # weak class signal: same-class cosine ~0.014, noise ~0.044
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(f"{path}/{name}.npy", x)
        np.save(f"{path}/{name}_labels.npy", labels)


def peak_rss() -> int:
    """This process's resident high-water mark in bytes.

    /proc's VmHWM belongs to the process's own address space. ru_maxrss does not
    do here: the kernel carries the parent's high-water mark across fork + exec,
    so a child started by a parent that once held a 3 GB data set reads >= 3 GB.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- the variants (run in a child process) ------------------------------------

def torch_knn(bank, bank_y, queries, k, t, classes, chunk):
    """Naive reference: similarity matrix per chunk, topk, exp(s/T) votes, argmax."""
    import torch

    preds = []
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ bank.T
        top, idx = sims.topk(k, dim=1)
        del sims
        scores = torch.zeros(len(top), classes).scatter_add_(1, bank_y[idx], torch.exp(top / t))
        preds.append(scores.argmax(dim=1))
    return torch.cat(preds).numpy()


def run_child(variant: str, data: str, k: int, t: float, classes: int, chunk: int) -> dict:
    import psutil
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    bank, queries = np.load(f"{data}/bank.npy"), np.load(f"{data}/queries.npy")
    bank_y, query_y = np.load(f"{data}/bank_labels.npy"), np.load(f"{data}/queries_labels.npy")
    if variant == "faiss":
        sys.path.insert(0, REPO)
        from ssl_bf.evaluation.knn import knn_classify

        call = lambda: knn_classify(bank, bank_y, queries, query_y, [k], t, classes,  # noqa: E731
                                    chunk_size=chunk, return_predictions=True)["predictions"][k]
    elif variant.startswith("lightly"):
        from lightly.utils.benchmarking import knn_predict

        bank_t = torch.from_numpy(bank).t().contiguous()  # lightly's layout: (D, N)
        tq, ty = torch.from_numpy(queries), torch.from_numpy(bank_y)
        del bank
        call = lambda: torch.cat([  # noqa: E731
            knn_predict(tq[s:s + chunk], bank_t, ty, classes, knn_k=k, knn_t=t)[:, 0]
            for s in range(0, len(tq), chunk)]).numpy()
    else:
        tb, tq, ty = torch.from_numpy(bank), torch.from_numpy(queries), torch.from_numpy(bank_y)
        call = lambda: torch_knn(tb, ty, tq, k, t, classes, chunk)  # noqa: E731
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    preds = call()
    seconds = time.perf_counter() - start
    peak = peak_rss()
    np.save(f"{data}/pred_{variant}.npy", np.asarray(preds))
    acc = 100.0 * float((np.asarray(preds) == query_y).mean())
    return {"seconds": seconds, "delta_mb": (peak - before) / 2**20, "peak_mb": peak / 2**20,
            "top1": acc}


# --- the parent: alternate variants, collect medians -------------------------

def bench(data: str, variants: dict[str, int], args, repeats: int) -> dict:
    runs = {v: [] for v in variants}
    for r in range(repeats):
        for variant, chunk in variants.items():
            cmd = [sys.executable, __file__, "--child", variant, "--data", data, "--k", str(args.k),
                   "--t", str(args.t), "--classes", str(args.classes), "--chunk", str(chunk)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{variant} failed:\n{done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            reference = (np.load(f"{data}/pred_faiss.npy")
                         if os.path.exists(f"{data}/pred_faiss.npy") else None)
            mine = np.load(f"{data}/pred_{variant}.npy")
            row["mismatches"] = None if reference is None else int((reference != mine).sum())
            runs[variant].append(row)
            print(f"  repeat {r + 1} {variant:16s} {row['seconds']:7.2f} s  "
                  f"+{row['delta_mb']:7.0f} MB"
                  f"  top-1 {row['top1']:.2f}  mismatches vs faiss {row['mismatches']}",
                  flush=True)
    return {v: {"seconds": statistics.median(x["seconds"] for x in rs),
                "all_seconds": [round(x["seconds"], 2) for x in rs],
                "delta_mb": statistics.median(x["delta_mb"] for x in rs),
                "top1": rs[0]["top1"], "mismatches": max(x["mismatches"] or 0 for x in rs),
                "chunk": variants[v]} for v, rs in runs.items()}


def report(title: str, bank_mb: float, chunk_mb: float, result: dict) -> None:
    base = result["faiss"]["seconds"]
    print(f"\n{title}  (bank {bank_mb:.0f} MB; faiss query chunk results {chunk_mb:.1f} MB)")
    print("| variant | query chunk | median s (runs) | vs faiss | peak extra MB | top-1 | "
          "mismatches |")
    print("|---|---|---|---|---|---|---|")
    for v, r in result.items():
        print(f"| {v} | {r['chunk']} | {r['seconds']:.2f} "
              f"({', '.join(map(str, r['all_seconds']))}) "
              f"| {r['seconds'] / base:.2f}x | {r['delta_mb']:.0f} | {r['top1']:.2f} "
              f"| {r['mismatches']} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child")
    p.add_argument("--data")
    p.add_argument("--bank", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--t", type=float, default=0.1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--large", action="store_true", help="also a 10x larger bank")
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.data, args.k, args.t, args.classes,
                                   args.chunk)))
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  cores {len(os.sched_getaffinity(0))}  "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    sizes = [(args.bank, {"faiss": args.chunk, "lightly": args.chunk, "lightly_all": args.queries,
                          "torch_all": args.queries})]
    if args.large:  # all-at-once lightly/torch would need a 10k x 500k matrix (20 GB): chunks only
        sizes.append((10 * args.bank, {"faiss": args.chunk, "lightly": 1024,
                                       "torch_chunked": 1024}))
    for bank, variants in sizes:
        with tempfile.TemporaryDirectory() as data:
            make_data(data, bank, args.queries, args.dim, args.classes, seed=0)
            print(f"bank {bank} x {args.dim}, {args.queries} queries, k={args.k}, T={args.t}",
                  flush=True)
            result = bench(data, variants, args, args.repeats)
            report(f"bank {bank} x {args.dim}", bank * args.dim * 4 / 2**20,
                   args.chunk * args.k * 12 / 2**20, result)


if __name__ == "__main__":
    main()
