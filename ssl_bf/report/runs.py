"""Runs as the report reads them: metrics.jsonl -> train rows, kNN rows, a final row."""
from __future__ import annotations

import json
from pathlib import Path

from ssl_bf.errors import UsageError


def read_run(directory: Path) -> dict:
    path = directory / "metrics.jsonl"
    if not path.is_file():
        raise UsageError(f"{directory} is not a run directory (no metrics.jsonl)")
    train, knn, clock = [], [], 0.0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "loss" in row:
            clock = row.get("time", clock)
            train.append(row)
        elif "knn_top1" in row:
            # monitor lines carry their own wall-clock; older runs' follow the step they evaluate
            knn.append({**row, "time": row.get("time", clock)})
    return {"name": directory.name, "dir": directory, "train": train, "knn": knn}


def final_row(run: dict) -> dict:
    train, knn = run["train"], run["knn"]
    last = train[-1] if train else {}
    groups = knn[-1].get("knn_top1_groups", {}) if knn else {}
    speeds = [r["samples_per_s"] for r in train[1:] if "samples_per_s" in r]
    return {"run": run["name"], "steps": last.get("step"), "epoch": last.get("epoch"),
            "loss": last.get("loss"), "knn_top1": knn[-1]["knn_top1"] if knn else None,
            "best_knn_top1": max((r["knn_top1"] for r in knn), default=None),
            "samples_per_s": sum(speeds) / len(speeds) if speeds else None,
            "minutes": last.get("time", 0) / 60 if last else None,
            "collapse": any(r.get("collapse") for r in train),
            **{g: groups.get(g) for g in ("many", "medium", "few")}}


def table(rows: list[dict]) -> str:
    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| run | steps | epoch | final loss | kNN top-1 (%) | many | medium | few "
             "| best kNN (%) | samples/s | minutes | collapse |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['run']} | {cell(r['steps'], 'd')} | {cell(r['epoch'], '.2f')} | "
                     f"{cell(r['loss'], '.4f')} | {cell(r['knn_top1'], '.2f')} | "
                     + " | ".join(cell(r[g], ".2f") for g in ("many", "medium", "few")) + " | "
                     f"{cell(r['best_knn_top1'], '.2f')} | {cell(r['samples_per_s'], '.1f')} | "
                     f"{cell(r['minutes'], '.1f')} | {'yes' if r['collapse'] else 'no'} |")
    return "\n".join(lines) + "\n"
