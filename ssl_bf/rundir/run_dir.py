"""A training run's directory, seen from every process (docs/design.md, Contract).

RunDir owns what the engine reads and writes there: the lock, the resume point and the check
of what a resume changes, config.yaml and config_changes.jsonl, metrics.jsonl, the
checkpoints and backbone.safetensors. Everything is read or written by the main process; the
outcome - the resume point, or the error of a failed write - reaches every process at once
(rundir/on_main.py), so the processes of a run agree on where they start and all stop
together, each with the cause.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from accelerate.utils import gather_object
from safetensors import SafetensorError
from torch import nn

from ssl_bf.config import save_config
from ssl_bf.config.schema import Config
from ssl_bf.errors import TrainingFailed, UsageError
from ssl_bf.rundir.checkpoint import checkpoint_step, find_latest, resolve_resume, save_checkpoint
from ssl_bf.rundir.export import BACKBONE_FILE, export_backbone
from ssl_bf.rundir.on_main import on_main
from ssl_bf.rundir.resume_check import check_resume, record_changes, run_dir_of
from ssl_bf.rundir.run_lock import RunLock
from ssl_bf.rundir.run_log import MetricsLog


@contextlib.contextmanager
def storage(out: Path, path: Path):
    """A failed write (no space, no permission, read-only) ends the run with one line
    naming the path and the checkpoint to resume from."""
    try:
        yield
    except (OSError, SafetensorError) as err:
        last = find_latest(out / "checkpoints")
        reason = getattr(err, "strerror", None) or str(err)
        raise TrainingFailed(f"cannot write {path}: {reason}; the last good "
                             f"checkpoint is {last or 'none (nothing to resume)'}; free space "
                             "or fix the permissions, then continue with "
                             "train.resume=auto") from None


class RunDir:
    """Taken at construction (lock, resume point); `close()` releases it."""

    def __init__(self, cfg: Config, accelerator, say: Callable[[str], None]):
        self.cfg, self.acc, self.say = cfg, accelerator, say
        self.path = Path(cfg.train.output_dir)
        self.log_file = MetricsLog(self.path / "metrics.jsonl", enabled=accelerator.is_main_process)
        self.lock = RunLock(self.path) if accelerator.is_main_process else None
        warning = on_main(accelerator, lambda: self.lock.acquire())  # before anything is read
        if warning:
            say(warning)
        # The main process alone finds the checkpoint (on shared storage a stale cache, or
        # node-local copies, could show the ranks different ones); each rank then checks it
        # loaded that step (`check_loaded`).
        found = on_main(accelerator, self._resume_point)
        self.resume_from = Path(found[0]) if found else None
        self.resume_step = found[1] if found else None
        self.changes = found[2] if found else []

    def _resume_point(self) -> tuple[str, int, list[dict]] | None:
        """(checkpoint, its step, the config changes a resume from it makes) or None; a
        change that alters training stops the launch here, before any data is read."""
        path = resolve_resume(self.cfg.train.resume, self.path)
        if path is None:
            if self.cfg.train.resume is None and (self.path / "checkpoints").exists():
                raise UsageError(f"train.output_dir: {self.path} already holds a run; continue it "
                                 "with train.resume=auto or choose another train.output_dir")
            return None
        return str(path), checkpoint_step(path), check_resume(self.cfg, run_dir_of(path))

    def check_loaded(self, step: int) -> None:
        """Every process loaded the step the main process chose, or every process stops."""
        steps = gather_object([step]) if self.acc.num_processes > 1 else [step]
        wrong = [(rank, s) for rank, s in enumerate(steps) if s != self.resume_step]
        if wrong:
            rank, read = wrong[0]
            raise UsageError(f"train.resume: process {rank} read step {read} from "
                             f"{self.resume_from}, the main process chose step "
                             f"{self.resume_step}; the processes see different files there "
                             "(node-local copies, or a stale cache of shared storage)")

    def begin(self, header: str, step: int) -> None:
        """config.yaml (headed by `header`), the resume's changes, the log cut back to `step`."""
        def write():
            self.say(header)
            for note in record_changes(self.path, self.changes, step):
                self.say(note)
            with storage(self.path, self.path / "config.yaml"):
                save_config(self.cfg, self.path / "config.yaml", header=header)
                self.log_file.truncate_after(step)
        on_main(self.acc, write)

    def log(self, row: dict) -> None:
        """One metrics.jsonl line; every process learns whether it was written."""
        def write():
            with storage(self.path, self.log_file.path):
                self.log_file.write(row)
        on_main(self.acc, write)

    def checkpoint(self, step: int, states: Callable[[], tuple[dict, dict]],
                   trainer_state: dict) -> None:
        """checkpoints/step_N from `states()` (model, optimizer), called on the main process."""
        root = self.path / "checkpoints"

        def write():
            with storage(self.path, root / f"step_{step:08d}"):
                save_checkpoint(root, step, *states(), trainer_state,
                                self.cfg.train.keep_checkpoints)
        on_main(self.acc, write)

    def export(self, backbone: nn.Module) -> Path:
        """backbone.safetensors, in torchvision's names."""
        path = self.path / BACKBONE_FILE

        def write():
            with storage(self.path, path):
                export_backbone(backbone, self.cfg.model, self.cfg.data.image_size, path)
        on_main(self.acc, write)
        return path

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
