"""One writer per run directory: `train.output_dir/run.lock`.

The main process creates the lock file exclusively (O_CREAT | O_EXCL, atomic on local
file systems and NFS v3+) before it writes anything, with who holds it: host, pid,
start time and command. A second launch finds it and stops with one `error:` line
naming the holder. A lock left by a process that is gone - killed, or its machine
rebooted with the pid unused - is taken over with a warning when the holder was on
this host (its pid is checked); a holder on another host cannot be checked from here,
so the message says to delete the file once that run is known to be gone - unless it was
written by this same SLURM job (a requeue keeps SLURM_JOB_ID; the nodes may be others): that
lock is taken over with a warning naming the old holder. The other
processes of a multi-process run take no lock: they learn the main process's outcome
(rundir/run_dir.py) and fail with it.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path

from ssl_bf.errors import UsageError

LOCK_FILE = "run.lock"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def read_holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # vanished, or cut short by a crash while it was written


def scheduler_job() -> str | None:
    """This launch's job id where a scheduler keeps it across a requeue: SLURM's SLURM_JOB_ID
    (the only scheduler supported here; a requeued SLURM job keeps its id)."""
    return os.environ.get("SLURM_JOB_ID") or None


def describe(holder: dict) -> str:
    job = f", SLURM job {holder['job']}" if holder.get("job") else ""
    return (f"pid {holder.get('pid')} on host {holder.get('host')}{job} since "
            f"{holder.get('started')} ({holder.get('command', '?')})")


class RunLock:
    """Exclusive ownership of a run directory by this process."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / LOCK_FILE
        self.held = False

    def acquire(self) -> str | None:
        """Take the lock; returns a warning when a stale lock was taken over.
        Raises UsageError when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        warning = None
        for _ in range(3):  # a takeover race: at most a few rounds
            if self._create():
                self.held = True
                atexit.register(self.release)
                return warning
            holder = read_holder(self.path)
            requeued = holder is not None and self._requeued(holder)
            if holder is not None and not self._stale(holder) and not requeued:
                raise UsageError(f"train.output_dir: {self.path.parent} is in use by "
                                 f"{describe(holder)}; wait for that run, choose another "
                                 f"train.output_dir, or delete {self.path} if that run is gone")
            warning = (f"warning: taking over the lock of "
                       f"{'this requeued job' if requeued else 'a run that is gone'} "
                       f"({describe(holder) if holder else 'unreadable lock file'})")
            self.path.unlink(missing_ok=True)
        raise UsageError(f"train.output_dir: could not take {self.path}: other launches keep "
                         "taking it")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
                  "job": scheduler_job()}
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(holder))
        return True

    @staticmethod
    def _requeued(holder: dict) -> bool:
        """Written by an earlier launch of this very scheduler job (a requeue after a node
        failed or the job was preempted), unless that launch still runs here."""
        job = scheduler_job()
        if job is None or holder.get("job") != job:
            return False
        same_host = holder.get("host") == socket.gethostname()
        return not (same_host and pid_alive(int(holder.get("pid", -1))))

    @staticmethod
    def _stale(holder: dict) -> bool:
        same_host = holder.get("host") == socket.gethostname()
        return same_host and not pid_alive(int(holder.get("pid", -1)))

    def release(self) -> None:
        if not self.held:
            return
        holder = read_holder(self.path)
        if holder is not None and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False
