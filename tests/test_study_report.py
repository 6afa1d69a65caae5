"""The study report (experiments/study_report.py): means, paired-by-seed deltas and the
per-group table, from run directories written here by hand."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from conftest import REPO

from experiments.study_report import write_report

COUNTS = [50, 20, 5]  # three classes: many / medium / few by count


def write_run(root, name: str, seed: int, knn: list[float], groups: list[float],
              linear: float | None, counts: list[int] = COUNTS):
    directory = root / name / f"seed{seed}"
    directory.mkdir(parents=True)
    lines = [{"step": 10, "epoch": 1, "loss": 5.0, "time": 60.0}]
    for epoch, top1 in zip((1, 2), knn):
        # the middle: few halved
        at = groups if epoch == 2 else [groups[0], groups[1], groups[2] / 2]
        lines.append({"step": 10 * epoch, "epoch": epoch, "knn_top1": top1,
                      "knn_top1_groups": dict(zip(("many", "medium", "few"), at)),
                      "knn_top1_per_class": groups, "class_counts": counts})
    (directory / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = {"name": name, "seed": seed, "kind": "pretrain", "commands": [f"train {name} {seed}"]}
    if linear is not None:
        result.update(linear_top1=linear,
                      linear_top1_groups={"many": 90.0, "medium": 50.0, "few": linear})
    (directory / "result.json").write_text(json.dumps(result))


def test_paired_deltas_group_table_and_csv(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [{"name": "base", "label": "baseline", "seed": s} for s in (0, 1, 2)]
    runs += [{"name": "var", "label": "variant", "baseline": "base", "seed": s} for s in (0, 2)]
    write_run(tmp_path, "base", 0, [30.0, 40.0], [60.0, 40.0, 20.0], 35.0)
    write_run(tmp_path, "base", 1, [31.0, 42.0], [61.0, 41.0, 22.0], 36.0)
    write_run(tmp_path, "base", 2, [29.0, 44.0], [62.0, 42.0, 24.0], 37.0)
    write_run(tmp_path, "var", 0, [30.0, 41.0], [60.0, 40.0, 23.0], 34.0)
    write_run(tmp_path, "var", 2, [29.0, 43.0], [62.0, 42.0, 28.0], 40.0)
    write_report(runs, tmp_path, tmp_path / "results", "tiny")
    text = (tmp_path / "results" / "tiny_summary.md").read_text()
    # base end: 40, 42, 44 -> 42.00 ± 2.00; var 41, 43 -> 42.00 ± 1.41; paired by seed: +1, -1
    assert "| `base` | baseline | 3 | 42.00 ± 2.00 | 40.00, 42.00, 44.00 | 30.00 ± 1.00 |" in text
    assert "| +0.00 | +0.0 | +0.00 ± 1.41 (+1.00, -1.00) |" in text
    # few group: base 20, 22, 24; var 23, 28 -> paired +3, +4; linear few 35, 37 vs 34, 40: -1, +3
    # the few group at the middle (halved): base 10, 11, 12; var 11.5, 14 -> paired +1.5, +2
    assert ("| `var` | 2 | 61.00 ± 1.41 | 41.00 ± 1.41 | 25.50 ± 3.54 | "
            "+3.50 ± 0.71 (+3.00, +4.00) | 12.75 ± 1.77 | +1.75 ± 0.35 (+1.50, +2.00) |") in text
    assert text.rstrip().endswith("| +1.00 ± 2.83 (-1.00, +3.00) |")
    rows = list(csv.DictReader(open(tmp_path / "results" / "tiny_runs.csv")))
    kept = ("name", "seed", "knn_end", "knn_few", "knn_few_mid", "linear")
    assert [tuple(r[k] for k in kept) for r in rows][3:] == [
        ("var", "0", "41.0", "23.0", "11.5", "34.0"), ("var", "2", "43.0", "28.0", "14.0", "40.0")]
    assert (tmp_path / "results" / "tiny_per_class.png").stat().st_size > 10_000  # counts differ


def test_readme_gets_the_summary_between_its_markers_and_nothing_else(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [{"name": "base", "label": "baseline", "seed": 0}]
    write_run(tmp_path, "base", 0, [30.0, 40.0], [60.0, 40.0, 20.0], None)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- tiny_summary -->\n| old | table |\n"
                      "<!-- /tiny_summary -->\n\noutro\n")
    write_report(runs, tmp_path, tmp_path / "results", "tiny", readme)
    summary = (tmp_path / "results" / "tiny_summary.md").read_text().strip("\n")
    assert readme.read_text() == (f"intro\n<!-- tiny_summary -->\n{summary}\n"
                                  "<!-- /tiny_summary -->\n\noutro\n")
    assert "| `base` | baseline | 1 | 40.00 |" in summary


@pytest.mark.parametrize("text", ["no markers\n", "<!-- /tiny_summary -->\n<!-- tiny_summary -->\n",
                                  "<!-- tiny_summary -->\n<!-- /tiny_summary -->\n" * 2])
def test_a_readme_without_one_marker_pair_is_a_usage_error_before_any_run(tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    grid = tmp_path / "grid.yaml"
    grid.write_text("report: tiny\nvariants:\n  - {name: base, recipe: study/mocov2, seeds: [0]}\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "study.py"),
                           "--grid", str(grid), "--out", str(out), "--readme", str(readme)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --readme") and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists() and readme.read_text() == text


def test_a_stratified_cut_is_balanced_no_group_table_and_no_per_class_plot(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [{"name": "bal", "label": "balanced", "seed": 0}]
    write_run(tmp_path, "bal", 0, [30.0, 40.0], [60.0, 40.0, 20.0], 35.0, counts=[1241, 1240, 1240])
    write_report(runs, tmp_path, tmp_path / "results", "tiny")
    assert "kNN few" not in (tmp_path / "results" / "tiny_summary.md").read_text()
    assert not (tmp_path / "results" / "tiny_per_class.png").exists()
    # one long-tailed row beside it: the table and the plot (with the balanced control drawn)
    runs.append({"name": "lt", "label": "long-tailed", "baseline": "bal", "seed": 0})
    write_run(tmp_path, "lt", 0, [30.0, 38.0], [62.0, 30.0, 10.0], 30.0, counts=[50, 20, 5])
    write_report(runs, tmp_path, tmp_path / "results", "tiny")
    assert ("| `lt` | 1 | 62.00 | 30.00 | 10.00 |"
            in (tmp_path / "results" / "tiny_summary.md").read_text())
    assert (tmp_path / "results" / "tiny_per_class.png").stat().st_size > 10_000


def variant(name: str, n: int, knn_end: float) -> dict:
    return {"name": name, "n": n, "knn_end": knn_end}


def test_a_panel_draws_the_default_and_the_best_confirmed_row_or_every_row_of_two():
    from experiments.study_plots import drawn
    screening = [variant("v3_bf", 3, 38.1), variant("v3_bf_w025", 1, 39.1),
                 variant("v3_bf_gate", 3, 38.5), variant("v3_bf_pre", 1, 38.0)]
    by_name = {s["name"]: s for s in screening}
    # the one-seed row scores highest but is not confirmed: the best drawn is the 3-seed gate
    assert drawn("v3", screening, by_name) == [("v3", "k-"), ("v3_bf", "C3--"),
                                               ("v3_bf_gate", "C0-")]
    # the default is also the best: drawn once
    assert drawn("v3", screening[:1] + screening[3:] + [variant("x", 1, 9.0)], by_name) == [
        ("v3", "k-"), ("v3_bf", "C3--")]
    # the 48-epoch point: no <baseline>_bf row, both BatchFormer rows drawn
    long = [variant("v3_bf_long", 1, 50.0), variant("v3_authors_long", 1, 51.0)]
    assert drawn("v3_long", long, {s["name"]: s for s in long}) == [
        ("v3_long", "k-"), ("v3_bf_long", "C3--"), ("v3_authors_long", "C0-")]
    # two rows, the default listed second: it still gets the red dashed line
    pair = [variant("v3_authors", 3, 38.0), variant("v3_bf", 3, 38.1)]
    assert drawn("v3", pair, {s["name"]: s for s in pair}) == [
        ("v3", "k-"), ("v3_bf", "C3--"), ("v3_authors", "C0-")]
