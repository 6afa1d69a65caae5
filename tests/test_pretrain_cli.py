"""The pretraining CLI end to end on real CIFAR-10 images: run directory, resume, kill."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO
from safetensors.torch import load_file

from ssl_bf.rundir.checkpoint import load_checkpoint

FAST = ["model.width=0.25", "method.proj_hidden=128", "method.pred_hidden=128",
        "train.batch_size=32", "knn.every=0", "train.log_every=1", "method.bn_splits=4"]


def pretrain(out: Path, root: Path, *args: str, timeout: int = 300, wait: bool = True):
    cmd = [sys.executable, "ssl_bf/pretrain.py", f"data.root={root}", f"train.output_dir={out}",
           *FAST, *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("recipe", ["mocov2", "mocov2_bf", "mocov3", "mocov3_bf",
                                    "mocov2_bf_authors", "mocov3_bf_authors"])
def test_recipe_writes_the_contract_run_directory(tmp_path, cifar_root, recipe):
    out = tmp_path / recipe
    pretrain(out, cifar_root, f"recipe={recipe}", "train.max_steps=3")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    with_bf = "_bf" in recipe
    assert saved["method"]["name"] == recipe[:6] and saved["bf"]["enabled"] == with_bf
    assert saved["bf"]["keys"] == recipe.endswith("_authors")
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all({"step", "epoch", "loss", "lr"} <= set(r) for r in rows)
    assert all(0 < r["loss"] < 50 for r in rows)
    assert ("loss_bf" in rows[0]) == with_bf
    assert (out / "checkpoints" / "last" / "model.safetensors").is_file()
    _, _, state = load_checkpoint(out / "checkpoints" / "last")
    assert state["step"] == 3
    backbone = load_file(str(out / "backbone.safetensors"))
    assert "conv1.weight" in backbone and not any("bf" in k or "key" in k for k in backbone)


def test_killed_mid_epoch_resumes_to_the_same_result(tmp_path, cifar_root):
    """kill -9 after a mid-epoch checkpoint; resume=auto ends where an uninterrupted run ends
    (the authors' MoCo-v2 design: keys through the shared layer, both key streams queued)."""
    args = ["recipe=mocov2_bf_authors", "train.epochs=2", "train.checkpoint_every=2",
            "data.subset=160",
            # lightly's PIL views (the SIGTERM test in test_reliability: batched)
            "aug.batched=false"]
    straight = tmp_path / "straight"
    pretrain(straight, cifar_root, *args)
    crashed = tmp_path / "crashed"
    proc = pretrain(crashed, cifar_root, *args, wait=False)
    marker = crashed / "checkpoints" / "step_00000004"
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "no mid-epoch checkpoint was written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (crashed / "backbone.safetensors").exists()  # it really died before the end
    pretrain(crashed, cifar_root, *args, "train.resume=auto")
    a, b = (load_file(str(straight / "backbone.safetensors")),
            load_file(str(crashed / "backbone.safetensors")))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    ma, mb = (load_checkpoint(straight / "checkpoints" / "last")[0],
              load_checkpoint(crashed / "checkpoints" / "last")[0])
    assert (torch.equal(ma["queue.keys"], mb["queue.keys"])
            and torch.equal(ma["queue.ptr"], mb["queue.ptr"]))
    la = [(r["step"], r["loss"]) for r in metrics(straight)]
    lb = [(r["step"], r["loss"]) for r in metrics(crashed)]
    assert la == lb


def test_existing_run_is_not_overwritten(tmp_path, cifar_root):
    out = tmp_path / "run"
    pretrain(out, cifar_root, "recipe=mocov3", "train.max_steps=1")
    result = subprocess.run([sys.executable, "ssl_bf/pretrain.py", "recipe=mocov3",
                             f"data.root={cifar_root}", f"train.output_dir={out}", *FAST],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "train.resume=auto" in result.stderr


def test_batch_larger_than_data_is_a_usage_error(tmp_path, cifar_root):
    result = subprocess.run([sys.executable, "ssl_bf/pretrain.py", "recipe=mocov3",
                             f"data.root={cifar_root}", f"train.output_dir={tmp_path}/x", *FAST,
                             "data.subset=20"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "error: train.batch_size: 32 is larger than the data set")
