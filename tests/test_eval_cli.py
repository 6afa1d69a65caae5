"""eval/knn.py and eval/linear.py end to end on a run directory from a short pretraining."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from accelerate.state import AcceleratorState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO)


def cli(name: str):
    """eval/NAME.py as a module (its main() is the CLI)."""
    spec = importlib.util.spec_from_file_location(f"eval_{name}",
                                                  os.path.join(REPO, "eval", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: list[str], launch: list[str] | None = None) -> subprocess.CompletedProcess:
    prefix = [sys.executable] if launch is None else \
        [sys.executable, "-m", "accelerate.commands.launch", *launch]
    done = subprocess.run(prefix + args, capture_output=True, text=True, env=ENV, cwd=REPO,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def last_json(stdout: str) -> dict:
    """The contract: stdout ends with exactly one JSON line."""
    lines = stdout.strip().splitlines()
    assert not lines[-2].lstrip().startswith("{"), "more than one JSON line"
    return json.loads(lines[-1])


@pytest.fixture
def fresh_accelerate():
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def monitor_row(run_dir) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in rows if "knn_top1" in r]
    assert len(knn) == 1 and knn[0]["epoch"] == 1
    return knn[0]


def check_knn_row(row: dict) -> None:
    for key in ("knn_top1", "knn_top1_k20", "knn_top5_k20", "knn_top1_k200", "knn_top5_k200"):
        assert 0.0 <= row[key] <= 100.0, key
    assert row["knn_top1"] == row["knn_top1_k200"]  # knn_top1 = the last k of knn.k
    assert row["knn_top5_k200"] >= row["knn_top1_k200"]


def test_knn_cli_on_run_dir_matches_the_monitor(run_dir):
    done = run(["eval/knn.py", f"checkpoint={run_dir}"])
    row = last_json(done.stdout)
    check_knn_row(row)
    monitor = monitor_row(run_dir)
    for key in ("knn_top1", "knn_top1_k20", "knn_top1_k200", "knn_top5_k200"):
        assert row[key] == pytest.approx(monitor[key], abs=0.01), key
    assert "top-1" in done.stdout and str(run_dir / "backbone.safetensors") in done.stdout


def test_knn_cli_random_baseline(cifar_root, capsys, fresh_accelerate):
    assert cli("knn").main(["checkpoint=random", "recipe=mocov3", "model.width=0.25",
                            f"data.root={cifar_root}"]) == 0
    out = capsys.readouterr().out
    check_knn_row(last_json(out))
    assert "random init (seed 0)" in out


def test_knn_cli_on_the_exported_file_agrees_with_the_run(run_dir, cifar_root, capsys,
                                                          fresh_accelerate):
    assert cli("knn").main([f"checkpoint={run_dir / 'backbone.safetensors'}",
                            f"data.root={cifar_root}"]) == 0
    row = last_json(capsys.readouterr().out)
    monitor = monitor_row(run_dir)
    assert row["knn_top1"] == pytest.approx(monitor["knn_top1"], abs=0.01)


def test_linear_cli_cached_on_two_processes(run_dir):
    done = run(["eval/linear.py", f"checkpoint={run_dir}", "linear.mode=cached", "linear.epochs=5",
                "linear.copies=2"],
               launch=["--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                       "--mixed_precision", "no", "--dynamo_backend", "no"])
    row = last_json(done.stdout)
    assert 0.0 <= row["linear_top1"] <= row["linear_top5"] <= 100.0
    assert row["linear_mode"] == "cached"
    assert "2 process(es)" in done.stdout


def test_linear_cli_standard(run_dir, capsys, fresh_accelerate):
    assert cli("linear").main([f"checkpoint={run_dir}", "linear.mode=standard", "linear.epochs=1",
                               "linear.batch_size=64"]) == 0
    out = capsys.readouterr().out
    row = last_json(out)
    assert 0.0 <= row["linear_top1"] <= row["linear_top5"] <= 100.0
    assert row["linear_mode"] == "standard" and "epoch 1/1" in out


@pytest.mark.parametrize("args, message", [
    (["checkpoint=/nonexistent/run"], "checkpoint: /nonexistent/run does not exist"),
    (["checkpoint=RUN", "model.width=0.5"], "does not match the backbone"),
    (["data.root=x"], "checkpoint=RUN_DIR|FILE.safetensors|random is required"),
    (["checkpoint=random"], "needs the architecture"),
    (["checkpoint=RUN", "knn.k=[500]"], "knn.k: 500 neighbours"),
])
def test_bad_input_exits_2_with_one_error_line(run_dir, capsys, fresh_accelerate, args, message):
    args = [a.replace("RUN", str(run_dir)) for a in args]
    with pytest.raises(SystemExit) as exit_:
        cli("knn").main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
