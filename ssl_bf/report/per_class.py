"""report_per_class.png: each class's last kNN top-1, as bars (runs side by side) and,
for imbalanced pretraining data, against the class's image count in the pretraining split."""
from __future__ import annotations

from pathlib import Path

from ssl_bf.report.curves import pyplot


def per_class_rows(runs: list[dict]) -> list[tuple[dict, dict]]:
    return [(run, run["knn"][-1]) for run in runs
            if run["knn"] and "knn_top1_per_class" in run["knn"][-1]]


def plot_per_class(runs: list[dict], path: Path) -> bool:
    rows = per_class_rows(runs)
    if not rows:
        return False
    plt = pyplot()
    classes = len(rows[0][1]["knn_top1_per_class"])
    names = rows[0][1].get("class_names") or [str(c) for c in range(classes)]
    # the count panel only says something when the classes' counts differ (imbalanced data)
    imbalanced = any(len(set(row.get("class_counts") or [0])) > 1 for _, row in rows)
    fig, axes = plt.subplots(2 if imbalanced else 1, 1, squeeze=False,
                             figsize=(max(8.0, 0.55 * classes + 2), 9 if imbalanced else 4.8))
    _bars(axes[0][0], rows, names)
    if imbalanced:
        _against_count(axes[1][0], rows)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _bars(ax, rows, names: list[str]) -> None:
    width = 0.8 / len(rows)
    for i, (run, row) in enumerate(rows):
        xs = [c + (i - (len(rows) - 1) / 2) * width for c in range(len(names))]
        ys = [a if a is not None else 0.0 for a in row["knn_top1_per_class"]]
        ax.bar(xs, ys, width=width, color=f"C{i}",
               label=f"{run['name']} (kNN {row['knn_top1']:.1f}%)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45 if len(names) <= 20 else 90, ha="right",
                       fontsize=9 if len(names) <= 20 else 6)
    ax.set_ylabel("kNN top-1 of the class (%)")
    ax.set_ylim(0, 100)
    ax.set_title("per-class kNN top-1 (last monitor point)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper right")


def _against_count(ax, rows) -> None:
    for i, (run, row) in enumerate(rows):
        counts = row.get("class_counts") or []
        pairs = sorted((n, a) for n, a in zip(counts, row["knn_top1_per_class"])
                       if a is not None and n > 0)
        ax.plot([n for n, _ in pairs], [a for _, a in pairs], color=f"C{i}", marker="o", ms=4,
                lw=1.2, label=run["name"])
    ax.set_xscale("log")
    ax.set_xlabel("images of the class in the pretraining split (log scale)")
    ax.set_ylabel("kNN top-1 of the class (%)")
    ax.set_title("per-class kNN top-1 vs class frequency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
