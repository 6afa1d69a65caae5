"""Scaling out without surprises (docs/scaling.md, "What is guaranteed"), on 2 real processes
(gloo): one download for every process, one resume point for every rank, a lock that a SLURM
requeue takes over, a failure on one rank that ends them all with its own message, a killed
rank that resume=auto continues exactly, and launch.sh's error line last with its status.
Faults are switched on per rank by tests/launch_with_patches.py."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from conftest import FIXTURE, REPO
from PIL import Image
from safetensors.torch import load_file

from ssl_bf.rundir.checkpoint import load_checkpoint
from ssl_bf.rundir.run_lock import RunLock

LAUNCH2 = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no"]
FAST = ["recipe=mocov3", "model.width=0.125", "method.proj_hidden=64", "method.pred_hidden=64",
        "train.batch_size=32", "knn.every=0", "train.log_every=1"]


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch2(out: Path, root: Path, *args: str, env: dict | None = None, wait: bool = True,
            timeout: int = 300):
    cmd = [*LAUNCH2, "--main_process_port", free_port(), "tests/launch_with_patches.py", *FAST,
           f"data.root={root}", f"train.output_dir={out}", *args]
    full_env = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def weights(run: Path) -> dict:
    return load_file(str(run / "backbone.safetensors"))


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return lines[-1] if lines else ""


# --- one download ---------------------------------------------------------------------

def cifar_archive(folder: Path) -> dict:
    """The fixture's 300 real images as torchvision's CIFAR-10 python archive; its md5s."""
    classes = sorted(p.name for p in (FIXTURE / "train").iterdir())

    def split(name):
        files = [(c, f) for c, cls in enumerate(classes)
                 for f in sorted((FIXTURE / name / cls).glob("*.jpg"))]
        data = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1).reshape(-1)
                         for _, f in files])
        return data, [c for c, _ in files]

    data, labels = split("train")
    members = {f"data_batch_{i + 1}": {"data": data[i::5], "labels": labels[i::5]}
               for i in range(5)}
    test, test_labels = split("test")
    members["test_batch"] = {"data": test, "labels": test_labels}
    members["batches.meta"] = {"label_names": classes}
    md5s, buffer = {}, io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            raw = pickle.dumps(content)
            md5s[name] = hashlib.md5(raw).hexdigest()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    (folder / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    md5s["archive"] = hashlib.md5(buffer.getvalue()).hexdigest()
    return md5s


def test_a_download_is_fetched_once_for_every_process_and_all_train(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    md5s = cifar_archive(served)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    count = tmp_path / "downloads.txt"
    env = {"STAND_IN_URL": f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz",
           "STAND_IN_MD5S": json.dumps(md5s), "STAND_IN_COUNT": str(count)}
    try:
        result = launch2(tmp_path / "run", tmp_path / "fresh", "data.download=true",
                         "train.epochs=1", "knn.every=1", env=env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(count.read_text().splitlines()) == 1  # two processes, one fetch
    assert (tmp_path / "run" / "backbone.safetensors").is_file()
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in log]
    assert any("knn_top1" in r for r in rows)  # the monitor read the fetched test split too


# --- one resume point -------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, cifar_root) -> Path:
    """A 2-process run of 2 epochs (12 steps; checkpoints at steps 6 and 12 kept)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    result = launch2(out, cifar_root, "train.epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def copy_run(run: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(run), str(dest)], check=True)
    (dest / "backbone.safetensors").unlink()
    return dest


def test_every_rank_resumes_from_the_checkpoint_the_main_process_chose(two_epochs, tmp_path,
                                                                     cifar_root):
    older = str(two_epochs / "checkpoints" / "step_00000006")
    plain = copy_run(two_epochs, tmp_path / "plain")
    skewed = copy_run(two_epochs, tmp_path / "skewed")
    args = ["train.epochs=3", "train.resume=auto"]
    a = launch2(plain, cifar_root, *args)
    # rank 1 would find step 6 as `last` (a stale cache): it must not matter
    b = launch2(skewed, cifar_root, *args, env={"RANK1_SEES_CHECKPOINT": older})
    assert a.returncode == 0 and b.returncode == 0, (a.stderr[-2000:], b.stderr[-2000:])
    assert "at step 12 (epoch 2)" in b.stdout
    wa, wb = weights(plain), weights(skewed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_rank_that_loaded_another_step_stops_every_rank(two_epochs, tmp_path, cifar_root):
    run = copy_run(two_epochs, tmp_path / "run")
    older = str(two_epochs / "checkpoints" / "step_00000006")
    result = launch2(run, cifar_root, "train.epochs=3", "train.resume=auto",
                     env={"RANK1_LOADS_CHECKPOINT": older}, timeout=120)
    assert result.returncode != 0
    assert "process 1 read step 6" in error_line(result)
    assert "chose step 12" in error_line(result)


# --- a requeued SLURM job takes its own lock over ----------------------------------------

def stale_lock(directory: Path, job: str | None) -> None:
    directory.mkdir(parents=True)
    holder = {"host": "node-that-crashed", "pid": 4242, "started": "2026-12-01T00:00:00",
              "command": "ssl_bf/pretrain.py", "job": job}
    (directory / "run.lock").write_text(json.dumps(holder))


def test_a_requeued_slurm_job_takes_over_its_lock_from_another_host(tmp_path, monkeypatch):
    stale_lock(tmp_path / "run", job="5150")
    monkeypatch.setenv("SLURM_JOB_ID", "5150")
    lock = RunLock(tmp_path / "run")
    warning = lock.acquire()
    assert warning and "requeued job" in warning and "node-that-crashed" in warning
    assert json.loads((tmp_path / "run" / "run.lock").read_text())["job"] == "5150"
    lock.release()


@pytest.mark.parametrize("job", ["5151", None])
def test_another_job_or_no_scheduler_still_refuses_a_foreign_lock(tmp_path, monkeypatch, job):
    stale_lock(tmp_path / "run", job="5150")
    if job is None:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    else:
        monkeypatch.setenv("SLURM_JOB_ID", job)
    with pytest.raises(Exception, match="is in use by pid 4242 on host node-that-crashed, "
                                        "SLURM job 5150"):
        RunLock(tmp_path / "run").acquire()


def test_a_requeue_still_refuses_a_live_launch_of_the_same_job_on_this_host(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    first = RunLock(tmp_path / "run")
    assert first.acquire() is None  # this process holds it, alive, on this host
    with pytest.raises(Exception, match="is in use by"):
        RunLock(tmp_path / "run").acquire()
    first.release()


# --- a failure on one rank ends every rank, with its own message ---------------------------

def test_a_metrics_write_failing_on_rank_0_ends_both_ranks_promptly(tmp_path, cifar_root):
    start = time.time()
    result = launch2(tmp_path / "run", cifar_root, "train.epochs=2",
                     env={"FAIL_METRICS_AFTER": "3"}, timeout=240)
    elapsed = time.time() - start
    assert result.returncode == 1, result.stderr[-2000:]
    line = error_line(result)
    assert line.startswith("error: cannot write") and "metrics.jsonl" in line
    assert "No space left on device" in line
    assert elapsed < 120  # not the collective timeout (gloo's default: 30 minutes)


def test_kill_9_of_one_rank_ends_the_launch_and_resume_continues_exactly(tmp_path, cifar_root):
    args = ["train.epochs=2", "train.checkpoint_every=2"]
    straight = tmp_path / "straight"
    assert launch2(straight, cifar_root, *args).returncode == 0
    crashed = tmp_path / "crashed"
    proc = launch2(crashed, cifar_root, *args, wait=False)
    marker = crashed / "checkpoints" / "step_00000004"
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "no mid-epoch checkpoint was written"
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True)
             if p.environ().get("RANK") == "1" and "launch_with_patches" in " ".join(p.cmdline())]
    assert ranks, "rank 1 not found"
    ranks[0].send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)  # the launch ends, not hangs
    assert proc.returncode != 0
    assert not (crashed / "backbone.safetensors").exists()
    assert launch2(crashed, cifar_root, *args, "train.resume=auto").returncode == 0
    a, b = weights(straight), weights(crashed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    qa = load_checkpoint(straight / "checkpoints" / "last")[2]
    qb = load_checkpoint(crashed / "checkpoints" / "last")[2]
    assert (qa["step"], qa["world_size"]) == (qb["step"], qb["world_size"]) == (12, 2)


# --- launch.sh: the error line last, with its status ---------------------------------------

@pytest.mark.parametrize("nproc", ["1", "2"])
def test_launch_sh_ends_with_the_error_line_and_its_status(nproc):
    env = {**os.environ, "NPROC": nproc, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(["./launch.sh", "recipe=mocov3", "train.batchsize=128"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    expected = "error: unknown key 'train.batchsize' (did you mean 'train.batch_size'?)"
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == expected
    assert result.stderr.count(expected) == 1
