"""report_curves.png: training and kNN curves of several runs, overlaid."""
from __future__ import annotations

from pathlib import Path

from ssl_bf.errors import UsageError

PANELS = [("train", "epoch", "loss", "loss"), ("train", "step", "lr", "learning rate"),
          ("knn", "epoch", "knn_top1", "kNN top-1 (%)"), ("train", "time", "loss", "loss"),
          ("knn", "time", "knn_top1", "kNN top-1 (%)"),
          ("train", "epoch", "spread", "embedding spread")]


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("the report needs matplotlib: pip install -e \".[plots]\"") from None
    return plt


def plot_curves(runs: list[dict], path: Path) -> None:
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
