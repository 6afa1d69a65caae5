"""python -m ssl_bf.report on a real run: its pictures, its table, and the wall-clock of
the kNN points."""
from __future__ import annotations

import json
import shutil

import pytest

from ssl_bf.report.__main__ import main as report_main
from ssl_bf.report.runs import read_run

matplotlib = pytest.importorskip("matplotlib")  # the plots extra; the dev extra installs it


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_run_logs_first_step_epoch_end_and_timed_knn(run_dir):
    """3 steps, log_every 13 (the recipe): the first step and the epoch's end are logged too,
    and the kNN line carries its own wall-clock, after the training it evaluates."""
    lines = rows(run_dir)
    train = [r for r in lines if "loss" in r]
    knn = [r for r in lines if "knn_top1" in r]
    assert [r["step"] for r in train] == [1, 3]
    assert len(knn) == 1 and knn[0]["time"] > train[-1]["time"] > 0
    assert knn[0]["class_names"][:3] == ["airplane", "automobile", "bird"]
    assert read_run(run_dir)["knn"][0]["time"] == knn[0]["time"]


def test_report_writes_readable_pictures_and_the_table(run_dir, tmp_path, capsys):
    from matplotlib.image import imread

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(run_dir, a)
    shutil.copytree(run_dir, b)
    assert report_main([str(a), str(b), "--embedding-points", "60"]) == 0
    table = capsys.readouterr().out
    assert "| a |" in table and "| b |" in table
    knn = [r for r in rows(run_dir) if "knn_top1" in r][0]
    assert f"| {knn['knn_top1']:.2f} |" in table
    for name, min_width in (("report_curves.png", 1500), ("report_per_class.png", 800),
                            ("report_embedding.png", 1300)):
        image = imread(a / name)
        assert image.shape[1] >= min_width and image.std() > 0.05, name  # drawn, not blank


def test_report_argument_errors_exit_2(capsys, tmp_path):
    for args, fragment in (([], "usage:"),
                           (["--embedding-points", "x", str(tmp_path)], "--embedding-points"),
                           ([str(tmp_path)], "not a run directory")):
        with pytest.raises(SystemExit) as exit_:
            report_main(args)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0]
