"""Reliability: bad images, non-finite losses, unsafe pickles, preemption, atomic checkpoints."""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from safetensors.torch import load_file

from ssl_bf.rundir.checkpoint import find_latest, load_checkpoint, save_checkpoint

SMALL = ["recipe=mocov3", "model.width=0.25", "method.proj_hidden=64", "method.pred_hidden=64",
         "knn.every=0", "train.log_every=1"]


def pretrain(out: Path, root: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, "ssl_bf/pretrain.py", *SMALL, f"data.root={root}",
           f"train.output_dir={out}", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def last_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.fixture(scope="module")
def messy_root(cifar_root, tmp_path_factory) -> tuple[Path, list[str]]:
    """200 real CIFAR-10 images + 2 unreadable files + 4 odd modes/sizes = 206 files."""
    root = tmp_path_factory.mktemp("messy")
    shutil.copytree(cifar_root / "train", root / "train")
    shutil.copytree(cifar_root / "test", root / "test")
    good = next((root / "train" / "cat").iterdir())
    bad = [root / "train" / "cat" / "broken.jpg", root / "train" / "dog" / "cut.jpg"]
    bad[0].write_text("this is not an image")
    bad[1].write_bytes(good.read_bytes()[:200])
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 40), dtype=np.uint8), "L").save(
        root / "train" / "frog" / "grey.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8), "RGBA").save(
        root / "train" / "ship" / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (20, 33, 3), dtype=np.uint8)).convert("P").save(
        root / "train" / "bird" / "palette.png")
    Image.fromarray(rng.integers(0, 65535, (48, 48), dtype=np.uint16)).save(
        root / "train" / "deer" / "deep.png")
    return root, [str(b) for b in bad]


# views made on the device (the mocov3 recipe's default) and lightly's PIL views in workers
@pytest.mark.parametrize("loading", [["data.cache_gb=8"],
                                     ["data.cache_gb=0", "data.num_workers=2",
                                      "aug.batched=false"]])
def test_bad_images_are_replaced_counted_and_named_once(tmp_path, messy_root, loading):
    root, bad = messy_root
    # 206 images, batch 103: two steps cover every file, each epoch
    result = pretrain(tmp_path / "run", root, "train.batch_size=103", "train.epochs=2", *loading)
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_metrics(tmp_path / "run")["replaced_images"] == 4  # 2 bad files x 2 epochs
    for path in bad:
        assert result.stderr.count(path) == 1, result.stderr[-3000:]


@pytest.mark.parametrize("loading", [["data.cache_gb=8"],
                                     ["data.cache_gb=0", "data.num_workers=1"]])
def test_strict_data_makes_a_bad_image_an_error(tmp_path, messy_root, loading):
    root, bad = messy_root
    result = pretrain(tmp_path / "run", root, "train.batch_size=103", "data.strict=true", *loading)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: data.strict: unreadable image")
    assert any(b in lines[-1] for b in bad)
    assert "Traceback" not in result.stderr


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, cifar_root):
    out = tmp_path / "run"
    # SGD at lr 1e12 blows up within a few steps (the loss, a gradient or the weights).
    args = ["recipe=mocov2", "method.bn_splits=4", "train.batch_size=32", "data.subset=96",
            "train.lr=1e12", "train.checkpoint_every=1"]
    result = pretrain(out, cifar_root, *args)
    assert result.returncode == 1, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: non-finite") and "step" in message
    failed_at = int(message.split("step ")[1].split(";")[0])
    model, _, state = load_checkpoint(out / "checkpoints" / "last")
    assert state["step"] == failed_at - 1 or (state["step"] < failed_at and "weights" in message)
    assert all(torch.isfinite(t).all() for t in model.values() if t.is_floating_point())


def test_nan_skip_mode_counts_and_finishes(tmp_path, cifar_root):
    # lr 1e12 for one step, then the weights are huge: later steps' gradients overflow.
    args = ["recipe=mocov2", "method.bn_splits=4", "train.batch_size=32", "data.subset=96",
            "train.lr=1e12", "train.on_nan=skip", "train.epochs=2"]
    skipped = pretrain(tmp_path / "skip", cifar_root, *args)
    row = last_metrics(tmp_path / "skip")
    assert row.get("nan_skips", 0) >= 1, skipped.stderr[-2000:]
    assert "step skipped" in skipped.stderr
    if skipped.returncode == 0:  # everything left finite: exported
        backbone = load_file(str(tmp_path / "skip" / "backbone.safetensors"))
        assert all(torch.isfinite(t).all() for t in backbone.values() if t.is_floating_point())
    else:  # an update overflowed the weights themselves: refused to save them
        assert "non-finite weights" in skipped.stderr.strip().splitlines()[-1]


class WritesAFile:
    """A pickle payload: unpickling it would create a file (i.e. run code)."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_pickle_that_runs_code_is_refused(tmp_path, cifar_root):
    out = tmp_path / "run"
    assert pretrain(out, cifar_root, "train.batch_size=32", "train.max_steps=1").returncode == 0
    ckpt = find_latest(out / "checkpoints")
    marker = tmp_path / "pwned"
    with open(ckpt / "optimizer.pt", "wb") as f:
        pickle.dump({"state": WritesAFile(str(marker))}, f)
    result = pretrain(out, cifar_root, "train.batch_size=32", "train.max_steps=2",
                      "train.resume=auto")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: refusing to load")
    assert not marker.exists()


def test_sigterm_saves_and_resume_continues_exactly(tmp_path, cifar_root):
    args = ["recipe=mocov2_bf", "method.bn_splits=4", "train.batch_size=32", "data.subset=160",
            "train.epochs=3", "probe.online=true",  # the online probe's state resumes exactly too
            "aug.batched=true"]  # views made on the device (test_pretrain_cli's kill test: PIL)
    straight = tmp_path / "straight"
    assert pretrain(straight, cifar_root, *args).returncode == 0
    out = tmp_path / "preempted"
    proc = pretrain(out, cifar_root, *args, wait=False)
    log = out / "metrics.jsonl"
    deadline = time.time() + 240
    while (time.time() < deadline and proc.poll() is None
           and (not log.exists() or len(log.read_text().splitlines()) < 2)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert "stopped by SIGTERM" in stdout
    _, _, state = load_checkpoint(out / "checkpoints" / "last")
    assert 2 <= state["step"] < 15
    assert not (out / "backbone.safetensors").exists()
    assert pretrain(out, cifar_root, *args, "train.resume=auto").returncode == 0
    a, b = (load_file(str(straight / "backbone.safetensors")),
            load_file(str(out / "backbone.safetensors")))
    assert all(torch.equal(a[k], b[k]) for k in a)
    (a, opt_a, _), (b, opt_b, _) = (load_checkpoint(d / "checkpoints" / "last")
                                    for d in (straight, out))
    probe = [k for k in a if k.startswith("online_probe.")]
    assert probe and all(torch.equal(a[k], b[k]) for k in probe)
    mom_a, mom_b = (o["online_probe."]["state"][0]["momentum_buffer"] for o in (opt_a, opt_b))
    assert torch.equal(mom_a, mom_b)


def test_sigterm_after_the_reader_of_stdout_died_still_stops_cleanly(tmp_path, cifar_root):
    """A study driver or a shell that launched the run is killed, then the run gets SIGTERM:
    its "stopped" line meets a closed pipe; the checkpoint is written and the exit is clean."""
    out = tmp_path / "run"
    proc = pretrain(out, cifar_root, "train.batch_size=32", "data.subset=96", "train.epochs=20",
                    wait=False)
    proc.stdout.close()  # the reading end is gone: the next write to stdout gets EPIPE
    log = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not log.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr[-2000:]
    assert "BrokenPipeError" not in stderr
    _, _, state = load_checkpoint(out / "checkpoints" / "last")
    logged = [r["step"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]
    assert state["step"] == logged[-1] >= 1  # saved where it stopped (train.log_every=1)
    # 3 steps an epoch
    assert state["step"] < 20 * 3 and not (out / "backbone.safetensors").exists()


WRITER = """
import sys, torch
from ssl_bf.rundir.checkpoint import save_checkpoint
big = {"w": torch.randn(8_000_000)}
step = int(sys.argv[2])
while True:
    step += 1
    save_checkpoint(sys.argv[1], step, big, {"state": {}, "param_groups": []}, {"step": step}, keep=2)
"""  # noqa: E501 - a script run as it is: its text is kept unchanged


def test_a_kill_during_a_write_leaves_a_loadable_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"w": torch.zeros(3)}, {"state": {}, "param_groups": []}, {"step": 1})
    rng = random.Random(0)
    for attempt in range(4):
        latest = find_latest(root)
        start = json.loads((latest / "trainer_state.json").read_text())["step"]
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(start)], cwd=REPO)
        time.sleep(1.5 + rng.random())  # past the imports, somewhere inside a write
        proc.kill()
        proc.wait()
        latest = find_latest(root)
        assert latest.name.startswith("step_")
        model, _, state = load_checkpoint(latest)
        assert state["step"] >= start
    assert len([p for p in root.glob("step_*")]) <= 3  # rotation keeps 2 (+1 being written)


def test_rotation_keeps_the_newest_and_last_points_at_the_newest(tmp_path):
    root = tmp_path / "checkpoints"
    for step in range(1, 6):
        save_checkpoint(root, step, {"w": torch.full((2,), float(step))},
                        {"state": {}, "param_groups": []}, {"step": step}, keep=2)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000004", "step_00000005"]
    assert os.readlink(root / "last") == "step_00000005"
    shutil.rmtree(root / "step_00000005")  # e.g. a disk fault took the newest one
    assert find_latest(root).name == "step_00000004"
