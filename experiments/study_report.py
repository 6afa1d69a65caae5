"""Tables of a study (experiments/study.py), from its run directories. For a grid whose
`report:` is <name>:

    <name>_runs.csv      one row per run: kNN at the middle and the end (per many / medium /
                         few group too), linear probe, loss, spread, collapse flag,
                         wall-clock, the command
    <name>_summary.md    one row per variant: mean +- std over seeds, each seed, delta to its
                         baseline (of the means, in units of the baseline's std, and paired
                         by seed), losses, spread; with a second table per many / medium /
                         few group under imbalanced pretraining (the long-tailed study)
    plots: experiments/study_plots.py
    study_tests.md       the confirmatory family's paired tests (experiments/study_tests.py)
"""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from experiments.markers import splice
from experiments.study_plots import long_tailed, plot_curves, plot_per_class
from experiments.study_tests import write_tests

GROUPS = ("many", "medium", "few")
FIELDS = ["name", "seed", "kind", "knn_mid", "knn_end", *[f"knn_{g}" for g in GROUPS],
          *[f"knn_{g}_mid" for g in GROUPS], "linear",
          *[f"linear_{g}" for g in GROUPS], "loss_plain_end", "loss_bf_end", "spread_end",
          "collapsed", "wall_s", "steps", "command"]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_row(directory: Path, result: dict) -> dict:
    rows = read_jsonl(directory / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    knn = [r for r in rows if "knn_top1" in r]
    last, end = (train[-1] if train else {}), (knn[-1] if knn else result)
    end_epoch = max((r["epoch"] for r in knn), default=None)
    mid = [r for r in knn if r["epoch"] * 2 == end_epoch]
    knn_groups, linear_groups = (end.get("knn_top1_groups") or {},
                                 result.get("linear_top1_groups") or {})
    mid_groups = (mid[0].get("knn_top1_groups") if mid else None) or {}
    return {
        "name": result["name"], "seed": result["seed"], "kind": result["kind"],
        "knn_mid": mid[0]["knn_top1"] if mid else None, "knn_end": end.get("knn_top1"),
        **{f"knn_{g}": knn_groups.get(g) for g in GROUPS},
        **{f"knn_{g}_mid": mid_groups.get(g) for g in GROUPS},
        "linear": result.get("linear_top1"),
        **{f"linear_{g}": linear_groups.get(g) for g in GROUPS},
        "per_class": end.get("knn_top1_per_class"), "class_counts": end.get("class_counts"),
        "loss_plain_end": last.get("loss_plain", last.get("loss")),
        "loss_bf_end": last.get("loss_bf"), "spread_end": last.get("spread"),
        "collapsed": any(r.get("collapse") for r in train),
        "wall_s": last.get("time", result.get("wall_s")), "steps": last.get("step"),
        "command": " && ".join(result["commands"]),
    }


def monitor_times(directory: Path) -> list[tuple[float, float]]:
    """(seconds since start, knn_top1) at each monitor line: the time of the last
    training line before it (older monitor lines carry no clock of their own)."""
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
        row["bf"] = "bf.enabled=true" in run.get("overrides", [])
        rows.append(row)
    return rows


def mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired(rows: list[dict], name: str, base: str, key: str) -> list[float]:
    """Per seed: the variant's value minus its baseline's with the same seed."""
    base_by_seed = {r["seed"]: r[key] for r in rows if r["name"] == base and r[key] is not None}
    return [r[key] - base_by_seed[r["seed"]] for r in rows
            if r["name"] == name and r[key] is not None and r["seed"] in base_by_seed]


def stat(group: list[dict], key: str) -> dict:
    m, sd = mean_std([r[key] for r in group])
    return {key: m, f"{key}_sd": sd}


def summarize(rows: list[dict]) -> list[dict]:
    summary = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        s = {"name": name, "label": group[0]["label"], "n": len(group),
             "per_seed": [r["knn_end"] for r in group], "baseline": group[0]["baseline"],
             "bf": group[0]["bf"],
             "loss_plain": mean_std([r["loss_plain_end"] for r in group])[0],
             "loss_bf": mean_std([r["loss_bf_end"] for r in group])[0],
             "spread": mean_std([r["spread_end"] for r in group])[0],
             "collapsed": sum(r["collapsed"] for r in group),
             "wall_s": mean_std([r["wall_s"] for r in group])[0], "command": group[0]["command"]}
        for key in ("knn_end", "knn_mid", "linear", "knn_few_mid",
                    *[f"{p}_{g}" for p in ("knn", "linear") for g in GROUPS]):
            s.update(stat(group, key))
        summary[name] = s
    for s in summary.values():
        base = summary.get(s["baseline"]) if s["baseline"] else None
        s["delta"] = (None if base is None or s["knn_end"] is None
                      else s["knn_end"] - base["knn_end"])
        # the difference in units of the baseline's seed-to-seed std
        s["delta_sd"] = (s["delta"] / base["knn_end_sd"]
                         if s["delta"] is not None and base["n"] > 1 and base["knn_end_sd"]
                         else None)
        for key in ("knn_end", "knn_few", "knn_few_mid", "linear", "linear_few"):
            s[f"paired_{key}"] = paired(rows, s["name"], s["baseline"], key) if base else []
    return list(summary.values())


def fmt(mean, sd, n: int = 2) -> str:
    """mean ± std; one seed has no std, so just its value."""
    if mean is None:
        return "-"
    return f"{mean:.2f}" if n < 2 else f"{mean:.2f} ± {sd:.2f}"


def num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_paired(deltas: list[float]) -> str:
    """Mean ± std of the per-seed differences, and the differences themselves."""
    if not deltas:
        return ""
    m, sd = mean_std(deltas)
    each = ", ".join(f"{d:+.2f}" for d in deltas)
    return f"{m:+.2f} ({each})" if len(deltas) < 2 else f"{m:+.2f} ± {sd:.2f} ({each})"


def markdown(summary: list[dict]) -> str:
    lines = ["| variant | what | seeds | kNN top-1 end (%), mean ± std | per seed | "
             "kNN middle (%) | Δ vs baseline | Δ / baseline std | Δ paired by seed | "
             "loss plain / BF | spread | collapsed | train s |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- | ---: | --- | "
             "---: |"]
    for s in summary:
        delta = "" if s["delta"] is None else f"{s['delta']:+.2f}"
        in_sd = "" if s.get("delta_sd") is None else f"{s['delta_sd']:+.1f}"
        seeds = ", ".join(f"{v:.2f}" for v in s["per_seed"] if v is not None)
        losses = ("-" if s["loss_plain"] is None
                  else f"{num(s['loss_plain'], 3)} / {num(s['loss_bf'], 3)}")
        lines.append(f"| `{s['name']}` | {s['label']} | {s['n']} | "
                     f"{fmt(s['knn_end'], s['knn_end_sd'], s['n'])} | "
                     f"{seeds} | {fmt(s['knn_mid'], s['knn_mid_sd'], s['n'])} | {delta} | "
                     f"{in_sd} | {fmt_paired(s['paired_knn_end'])} | {losses} | "
                     f"{num(s['spread'], 3)} | {s['collapsed']}/{s['n']} | {num(s['wall_s'], 0)} |")
    return "\n".join(lines) + "\n"


def markdown_groups(summary: list[dict]) -> str:
    """Per many / medium / few group (ssl_bf/evaluation/groups.py), kNN and linear probe, at the
    end (kNN few also at the middle); paired deltas on the few group."""
    lines = ["| variant | seeds | kNN many | kNN medium | kNN few | Δ few paired | "
             "kNN few, middle | Δ few middle paired | linear | linear many | linear medium | "
             "linear few | Δ linear few paired |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | "
             "--- |"]
    for s in summary:
        n = s["n"]
        cells = [fmt(s[f"knn_{g}"], s[f"knn_{g}_sd"], n) for g in GROUPS]
        lin = [fmt(s[f"linear_{g}"], s[f"linear_{g}_sd"], n) for g in GROUPS]
        lines.append(f"| `{s['name']}` | {n} | {' | '.join(cells)} | "
                     f"{fmt_paired(s['paired_knn_few'])} | "
                     f"{fmt(s['knn_few_mid'], s['knn_few_mid_sd'], n)} | "
                     f"{fmt_paired(s['paired_knn_few_mid'])} | "
                     f"{fmt(s['linear'], s['linear_sd'], n)} | {' | '.join(lin)} | "
                     f"{fmt_paired(s['paired_linear_few'])} |")
    return "\n" + "\n".join(lines) + "\n"


def write_report(runs: list[dict], out: Path, results: Path, name: str = "study",
                 readme: Path | None = None, verdict: Path | None = None) -> None:
    """The report's files; `readme` gets the tables between its markers, and for the two
    studies of the confirmatory family (experiments/study_tests.py) `readme` gets the tests'
    table and `verdict` (the project README) the sentences."""
    rows = collect(runs, out)
    results.mkdir(parents=True, exist_ok=True)
    with open(results / f"{name}_runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    # groups by count mean something only where the counts differ (on balanced data they
    # are label thirds)
    imbalanced = any(long_tailed(r["class_counts"]) for r in rows)
    text = markdown(summary) + (markdown_groups(summary) if imbalanced else "")
    (results / f"{name}_summary.md").write_text(text)
    if readme is not None:
        splice(readme, name, text)
    plot_curves(rows, summary, results / f"{name}_knn_vs_time.png")
    if imbalanced:
        plot_per_class(rows, summary, results / f"{name}_per_class.png")
    print(text)
    if name in ("study", "study_lt"):
        print(write_tests(results, [p for p in (readme, verdict) if p is not None]))
