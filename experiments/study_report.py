"""Tables and plots of the BatchFormer study, from its run directories.

    study_runs.csv      one row per run: kNN at the middle and the end, loss, spread,
                        collapse flag, wall-clock, the command
    study_summary.md    one row per variant: mean +- std over seeds, each seed, delta to its
                        baseline (also in units of the baseline's std), losses, spread
    study_knn_vs_time.png   kNN top-1 against wall-clock: baseline, default placement, best BF
"""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

FIELDS = ["name", "seed", "kind", "knn_mid", "knn_end", "loss_plain_end", "loss_bf_end",
          "spread_end", "collapsed", "wall_s", "steps", "command"]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_row(directory: Path, result: dict) -> dict:
    rows = read_jsonl(directory / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    knn = [r for r in rows if "knn_top1" in r]
    last = train[-1] if train else {}
    end_epoch = max((r["epoch"] for r in knn), default=None)
    mid = [r for r in knn if r["epoch"] * 2 == end_epoch]
    return {
        "name": result["name"], "seed": result["seed"], "kind": result["kind"],
        "knn_mid": mid[0]["knn_top1"] if mid else None,
        "knn_end": knn[-1]["knn_top1"] if knn else result.get("knn_top1"),
        "loss_plain_end": last.get("loss_plain", last.get("loss")),
        "loss_bf_end": last.get("loss_bf"), "spread_end": last.get("spread"),
        "collapsed": any(r.get("collapse") for r in train),
        "wall_s": last.get("time", result.get("wall_s")), "steps": last.get("step"),
        "command": " && ".join(result["commands"]),
    }


def monitor_times(directory: Path) -> list[tuple[float, float]]:
    """(seconds since start, knn_top1) at each monitor line: the time of the last
    training line before it (monitor lines carry no clock of their own)."""
    points, clock = [], 0.0
    for r in read_jsonl(directory / "metrics.jsonl"):
        if "loss" in r:
            clock = r["time"]
        elif "knn_top1" in r:
            points.append((clock, r["knn_top1"]))
    return points


def collect(runs: list[dict], out: Path) -> list[dict]:
    rows = []
    for run in runs:
        directory = out / run["name"] / f"seed{run['seed']}"
        if not (directory / "result.json").is_file():
            continue
        row = run_row(directory, json.loads((directory / "result.json").read_text()))
        row["curve"] = monitor_times(directory)
        row["baseline"], row["label"] = run.get("baseline"), run.get("label", run["name"])
        rows.append(row)
    return rows


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict]) -> list[dict]:
    names = list(dict.fromkeys(r["name"] for r in rows))
    summary = {}
    for name in names:
        group = [r for r in rows if r["name"] == name]
        end, end_sd = mean_std([r["knn_end"] for r in group])
        mid, mid_sd = mean_std([r["knn_mid"] for r in group])
        summary[name] = {"name": name, "label": group[0]["label"], "n": len(group),
                         "knn_end": end, "knn_end_sd": end_sd, "knn_mid": mid, "knn_mid_sd": mid_sd,
                         "per_seed": [r["knn_end"] for r in group],
                         "loss_plain": mean_std([r["loss_plain_end"] for r in group])[0],
                         "loss_bf": mean_std([r["loss_bf_end"] for r in group])[0],
                         "spread": mean_std([r["spread_end"] for r in group])[0],
                         "collapsed": sum(r["collapsed"] for r in group),
                         "wall_s": mean_std([r["wall_s"] for r in group])[0],
                         "baseline": group[0]["baseline"], "command": group[0]["command"]}
    for s in summary.values():
        base = summary.get(s["baseline"]) if s["baseline"] else None
        s["delta"] = None if base is None or s["knn_end"] is None else s["knn_end"] - base["knn_end"]
        # the Done-when's yardstick: the difference in units of the baseline's seed-to-seed std
        s["delta_sd"] = (s["delta"] / base["knn_end_sd"]
                         if s["delta"] is not None and base["n"] > 1 and base["knn_end_sd"] else None)
    return list(summary.values())


def fmt(mean, sd, n: int = 2) -> str:
    """mean ± std; one seed has no std, so just its value."""
    if mean is None:
        return "-"
    return f"{mean:.2f}" if n < 2 else f"{mean:.2f} ± {sd:.2f}"


def num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(summary: list[dict]) -> str:
    lines = ["| variant | what | seeds | kNN top-1 end (%), mean ± std | per seed | kNN middle (%) | "
             "Δ vs baseline | Δ / baseline std | loss plain / BF | spread | collapsed | train s |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | --- | ---: |"]
    for s in summary:
        delta = "" if s["delta"] is None else f"{s['delta']:+.2f}"
        in_sd = "" if s.get("delta_sd") is None else f"{s['delta_sd']:+.1f}"
        seeds = ", ".join(f"{v:.2f}" for v in s["per_seed"] if v is not None)
        losses = "-" if s["loss_plain"] is None else f"{num(s['loss_plain'], 3)} / {num(s['loss_bf'], 3)}"
        lines.append(f"| `{s['name']}` | {s['label']} | {s['n']} | {fmt(s['knn_end'], s['knn_end_sd'], s['n'])} | "
                     f"{seeds} | {fmt(s['knn_mid'], s['knn_mid_sd'], s['n'])} | {delta} | {in_sd} | {losses} | "
                     f"{num(s['spread'], 3)} | {s['collapsed']}/{s['n']} | {num(s['wall_s'], 0)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], summary: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plots]'): no plot written")
        return False
    by_name = {s["name"]: s for s in summary}
    methods = sorted({s["baseline"] for s in summary if s["baseline"]})
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4.2), squeeze=False)
    for ax, base in zip(axes[0], methods):
        bfs = [s for s in summary if s["baseline"] == base and s["knn_end"] is not None]
        # "best" among the confirmed (multi-seed) variants when there are any: a one-seed
        # screening row can be ~2 points off either way (experiments/README.md)
        confirmed = [s for s in bfs if s["n"] > 1] or bfs
        best = max(confirmed, key=lambda s: s["knn_end"], default=None)
        default = f"{base}_bf" if f"{base}_bf" in by_name else None
        best_name = best["name"] if best and best["name"] != default else None
        for name, style in ((base, "k-"), (default, "C3--"), (best_name, "C0-")):
            curves = [r for r in rows if r["name"] == name]
            for i, r in enumerate(curves):
                xs = [t / 60 for t, _ in r["curve"]]
                n = len(curves)
                label = f"{r['label']} ({n} seed{'s' if n > 1 else ''})" if i == 0 else "_nolegend_"
                ax.plot(xs, [v for _, v in r["curve"]], style, marker="o", ms=3, alpha=0.8, label=label)
        ax.set_title(f"{base}: kNN top-1 during training")
        ax.set_xlabel("wall-clock (min)")
        ax.set_ylabel("kNN top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(runs: list[dict], out: Path, results: Path) -> None:
    rows = collect(runs, out)
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "study_runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    (results / "study_summary.md").write_text(markdown(summary))
    plot(rows, summary, results / "study_knn_vs_time.png")
    print(markdown(summary))
