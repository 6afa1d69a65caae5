"""The study driver (experiments/study.py): finished runs are archived in the committed results
folder, a run found there is not run again, and a report with nothing to report is a usage
error that writes nothing."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO
from test_study_report import write_run

GRID = "report: tiny\nvariants:\n  - {name: base, recipe: study/mocov2, seeds: [0, 1]}\n"


def study(tmp_path, *args):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    cmd = [sys.executable, str(REPO / "experiments" / "study.py"), "--grid", str(grid),
           "--out", str(tmp_path / "out"), "--results", str(tmp_path / "results"), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_a_run_in_the_archive_is_not_run_again(tmp_path):
    write_run(tmp_path / "results" / "tiny_runs", "base", 0, [30.0, 40.0], [60.0, 40.0, 20.0], None)
    proc = study(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["2 runs selected, 1 to do", "base 1 pretrain"]


def test_report_only_archives_a_finished_run_without_its_checkpoints_and_reports_it(tmp_path):
    pytest.importorskip("matplotlib")
    write_run(tmp_path / "out", "base", 0, [30.0, 40.0], [60.0, 40.0, 20.0], None)
    run = tmp_path / "out" / "base" / "seed0"
    (run / "config.yaml").write_text("train: {seed: 0}\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_10.pt").write_bytes(b"weights")
    proc = study(tmp_path, "--report-only")
    assert proc.returncode == 0, proc.stderr
    kept = tmp_path / "results" / "tiny_runs" / "base" / "seed0"
    assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "metrics.jsonl", "result.json"]
    assert all((kept / n).read_bytes() == (run / n).read_bytes()
               for n in ("config.yaml", "metrics.jsonl"))
    assert "| `base` | base | 1 | 40.00 |" in (tmp_path / "results" / "tiny_summary.md").read_text()


def test_report_only_with_no_finished_run_is_a_usage_error_that_writes_nothing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- tiny_summary -->\n| the committed table |\n<!-- /tiny_summary -->\n")
    before = readme.read_text()
    proc = study(tmp_path, "--report-only", "--readme", str(readme))
    assert proc.returncode == 2, proc.stderr
    assert (proc.stderr.startswith("error: no finished run")
            and proc.stderr.count("\n") == 1), proc.stderr
    assert readme.read_text() == before and not (tmp_path / "results").exists()
