"""A run directory has one owner and one true history: the lock, resume that refuses silent
changes, and clean errors when storage fails (on a real, full file system)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from ssl_bf.errors import UsageError
from ssl_bf.rundir.run_lock import LOCK_FILE, RunLock

SMALL = ["model.width=0.25", "method.proj_hidden=64", "method.pred_hidden=64", "knn.every=0",
         "train.log_every=1", "train.batch_size=32", "data.subset=64"]
LAUNCH2 = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no"]


def cmd(out: Path, root: Path, *args: str) -> list[str]:
    return [sys.executable, "ssl_bf/pretrain.py", "recipe=mocov3", *SMALL, f"data.root={root}",
            f"train.output_dir={out}", *args]


def run(command: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, **kw)


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return errors[0]


def steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- the lock ------------------------------------------------------------------

def test_a_second_launch_on_a_live_run_exits_2_and_the_first_is_untouched(tmp_path, cifar_root):
    out = tmp_path / "run"
    # long enough to outlive the second launch on any machine; stopped by SIGTERM below
    first = subprocess.Popen(cmd(out, cifar_root, "train.epochs=500"), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / LOCK_FILE).exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run(cmd(out, cifar_root, "train.epochs=500"))
    assert second.returncode == 2
    line = error_line(second)
    assert f"is in use by pid {first.pid} on host {socket.gethostname()}" in line
    assert first.poll() is None  # the first run was live all along
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and steps(out)):
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    logged = steps(out)
    # each step once: nobody else wrote here
    assert logged and logged == list(range(1, len(logged) + 1))
    assert not (out / LOCK_FILE).exists()  # released as it stopped


def test_two_processes_fail_together_on_a_locked_directory(tmp_path, cifar_root):
    out = tmp_path / "run"
    out.mkdir()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": "now",
              "command": "pytest"}
    (out / LOCK_FILE).write_text(json.dumps(holder))
    result = run([*LAUNCH2, *cmd(out, cifar_root, "train.epochs=1")[1:]])
    assert result.returncode != 0
    assert f"is in use by pid {os.getpid()}" in result.stderr
    assert (json.loads((out / LOCK_FILE).read_text()) == holder
            and sorted(os.listdir(out)) == [LOCK_FILE])


def test_a_stale_lock_on_this_host_is_taken_over_another_hosts_is_not(tmp_path):
    lock_path = tmp_path / LOCK_FILE
    lock_path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid()}))
    lock = RunLock(tmp_path)
    assert "taking over the lock of a run that is gone" in lock.acquire()
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_path.exists()
    lock_path.write_text(json.dumps({"host": "elsewhere", "pid": dead_pid()}))
    with pytest.raises(UsageError, match="in use by pid .* on host elsewhere"):
        RunLock(tmp_path).acquire()
    lock_path.write_text("")  # cut short by a crash while it was written
    lock = RunLock(tmp_path)
    assert "unreadable lock file" in lock.acquire()
    lock.release()


# --- resume keeps the history true -------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cifar_root) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    result = run(cmd(out, cifar_root, "train.epochs=1"))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.parametrize("args, named", [
    (["method.temperature=0.5"], "method.temperature (0.2 -> 0.5)"),
    (["train.batch_size=16"], "train.batch_size (32 -> 16)"),
    (["recipe=mocov2"], "method.name"),
])
def test_resume_that_changes_training_exits_2_naming_the_keys(finished_run, cifar_root, args,
                                                              named):
    before = (finished_run / "config.yaml").read_text()
    result = run([*cmd(finished_run, cifar_root, "train.epochs=2", "train.resume=auto"), *args])
    assert result.returncode == 2
    line = error_line(result)
    assert named in line and "train.allow_changes=[" in line
    assert (finished_run / "config.yaml").read_text() == before


def test_allowed_and_forced_changes_are_recorded_with_their_step(tmp_path, finished_run,
                                                                 cifar_root):
    out = tmp_path / "copy"
    shutil.copytree(finished_run, out)
    result = run(cmd(out, cifar_root, "train.epochs=2", "train.resume=auto",
                     "method.temperature=0.5", "train.allow_changes=[method.temperature]"))
    assert result.returncode == 0, result.stderr[-2000:]
    changes = [json.loads(line)
               for line in (out / "config_changes.jsonl").read_text().splitlines()]
    assert [(c["step"], c["key"], c["from"], c["to"], c["allowed"]) for c in changes] == [
        (2, "method.temperature", 0.2, 0.5, "forced"), (2, "train.epochs", 1, 2, "observes"),
        (2, "train.output_dir", str(finished_run), str(out), "observes")]  # the copy moved it
    assert "note: from step 2, method.temperature: 0.2 -> 0.5 (forced)" in result.stdout
    assert steps(out) == [1, 2, 3, 4]


def test_a_checkpoint_that_does_not_fit_names_the_first_mismatch(finished_run, cifar_root):
    result = run(cmd(finished_run, cifar_root, "train.epochs=2", "train.resume=auto",
                     "method.proj_out=32", "train.allow_changes=[method.proj_out]"))
    assert result.returncode == 2
    assert ("does not fit this model" in error_line(result)
            and "(256, 64) in the checkpoint" in result.stderr)


# --- storage faults -------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 12 MiB file system (tmpfs), or None where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs",
                                            str(mount)], capture_output=True).returncode != 0:
        yield None
        return
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_ends_with_one_error_line_and_the_run_resumes(small_disk, tmp_path, cifar_root):
    if small_disk is None:  # not root: a read-only checkpoint folder fails the write for real
        out = tmp_path / "run"
        (out / "checkpoints").mkdir(parents=True)
        (out / "checkpoints").chmod(0o555)
    else:
        out = small_disk / "run"
    # one checkpoint (~8 MB: both encoders and LARS state) fits in 12 MiB, two do not
    result = run(cmd(out, cifar_root, "train.epochs=3", "train.resume=auto"))
    assert result.returncode == 1
    line = error_line(result)
    assert "cannot write" in line and "train.resume=auto" in line
    assert not list((out / "checkpoints").glob(".tmp-*"))  # nothing half-written
    assert all(json.loads(log_line)
               for log_line in (out / "metrics.jsonl").read_text().splitlines())
    if small_disk is None:
        (out / "checkpoints").chmod(0o755)
    else:
        assert "last good checkpoint is" in line and "step_00000002" in line
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run(cmd(out, cifar_root, "train.epochs=3", "train.resume=auto",
                    "train.keep_checkpoints=1"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert steps(out) == [1, 2, 3, 4, 5, 6] and (out / "backbone.safetensors").is_file()
