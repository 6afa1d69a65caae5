"""Compare runs: `python -m ssl_bf.report RUN_DIR [RUN_DIR ...]`.

Reads each run's metrics.jsonl and writes into the first run directory:
  report_curves.png     loss, lr and kNN top-1 against epoch, and kNN / loss against
                        wall-clock, every run overlaid
  report_per_class.png  the last kNN top-1 of each class against the class's image count
                        in the pretraining split (log scale), every run overlaid
  report.md             a table of final figures, many / medium / few included (also printed)
Needs matplotlib (`pip install -e ".[plots]"`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ssl_bf.errors import UsageError, exit_on_usage_error


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
            knn.append({**row, "time": clock})  # monitor lines follow the step they evaluate
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

    lines = ["| run | steps | epoch | final loss | kNN top-1 (%) | many | medium | few | best kNN (%) "
             "| samples/s | minutes | collapse |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['run']} | {cell(r['steps'], 'd')} | {cell(r['epoch'], '.2f')} | "
                     f"{cell(r['loss'], '.4f')} | {cell(r['knn_top1'], '.2f')} | "
                     + " | ".join(cell(r[g], ".2f") for g in ("many", "medium", "few")) + " | "
                     f"{cell(r['best_knn_top1'], '.2f')} | {cell(r['samples_per_s'], '.1f')} | "
                     f"{cell(r['minutes'], '.1f')} | {'yes' if r['collapse'] else 'no'} |")
    return "\n".join(lines) + "\n"


PANELS = [("train", "epoch", "loss", "loss"), ("train", "step", "lr", "learning rate"),
          ("knn", "epoch", "knn_top1", "kNN top-1 (%)"), ("train", "time", "loss", "loss"),
          ("knn", "time", "knn_top1", "kNN top-1 (%)"), ("train", "epoch", "spread", "embedding spread")]


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("the report needs matplotlib: pip install -e \".[plots]\"") from None
    return plt


def plot_per_class(runs: list[dict], path: Path) -> bool:
    """Per-class kNN top-1 (last monitor row) against the class's pretraining count."""
    rows = [(run, run["knn"][-1]) for run in runs if run["knn"] and "class_counts" in run["knn"][-1]]
    if not rows:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (run, row) in enumerate(rows):
        pairs = sorted((n, a) for n, a in zip(row["class_counts"], row["knn_top1_per_class"])
                       if a is not None and n > 0)
        ax.plot([n for n, _ in pairs], [a for _, a in pairs], color=f"C{i}", marker="o", ms=4,
                lw=1.2, label=f"{run['name']} (kNN {row['knn_top1']:.1f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("images of the class in the pretraining split (log scale)")
    ax.set_ylabel("kNN top-1 of the class (%)")
    ax.set_title("per-class kNN top-1 vs class frequency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot(runs: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (kind, x, y, label) in zip(axes.flat, PANELS):
        for i, run in enumerate(runs):
            rows = [r for r in run[kind] if y in r and x in r]
            xs = [r[x] / 60 if x == "time" else r[x] for r in rows]
            ax.plot(xs, [r[y] for r in rows], color=f"C{i}", marker="o" if kind == "knn" else None,
                    ms=3, lw=1.2, label=run["name"])
        ax.set_xlabel("wall-clock (min)" if x == "time" else x)
        ax.set_ylabel(label)
        ax.set_title(f"{label} vs {'wall-clock' if x == 'time' else x}")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or any(a.startswith("-") for a in args):
        raise UsageError("usage: python -m ssl_bf.report RUN_DIR [RUN_DIR ...]")
    runs = [read_run(Path(a)) for a in args]
    if len({r["name"] for r in runs}) < len(runs):  # e.g. several .../seed0: add the parent
        for r in runs:
            r["name"] = f"{r['dir'].resolve().parent.name}/{r['name']}"
    out = runs[0]["dir"]
    plot(runs, out / "report_curves.png")
    written = [out / "report_curves.png"]
    if plot_per_class(runs, out / "report_per_class.png"):
        written.append(out / "report_per_class.png")
    text = table([final_row(r) for r in runs])
    (out / "report.md").write_text(text)
    print(text, end="")
    print(f"wrote {', '.join(map(str, written))} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
