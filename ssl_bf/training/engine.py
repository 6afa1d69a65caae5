"""The pretraining loop: accelerate's prepare / backward idiom around a MoCo method.

One optimizer step = one global batch (train.batch_size samples over all
processes and accumulation steps). Schedules are per step; checkpoints are
written at epoch ends (and every train.checkpoint_every steps) and restore
everything - model, key encoder, queue, optimizer, position in the epoch.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import broadcast_object_list

from ssl_bf.config import save_config
from ssl_bf.config.derived import make_plan
from ssl_bf.config.schema import Config
from ssl_bf.data.pipeline import build_source, default_workers, describe_split
from ssl_bf.data.pretrain_input import Batch, PretrainInput
from ssl_bf.errors import TrainingFailed, UsageError
from ssl_bf.methods import build_method
from ssl_bf.rundir.checkpoint import resolve_resume, save_checkpoint
from ssl_bf.rundir.export import BACKBONE_FILE, export_backbone
from ssl_bf.rundir.resume_check import check_resume, record_changes, run_dir_of
from ssl_bf.rundir.run_lock import acquire_for_run
from ssl_bf.rundir.run_log import MetricsLog
from ssl_bf.training.collapse import CollapseWatch
from ssl_bf.training.online_probe import online_probe
from ssl_bf.training.optim import build_optimizer
from ssl_bf.training.runtime import (local_processes, make_accelerator, seed_step, set_threads,
                                     warn_slow_bf16)
from ssl_bf.training.schedules import lr_at, momentum_at
from ssl_bf.training.state_io import (TrainState, check_weights_finite, restore, states_to_save,
                                      storage)
from ssl_bf.training.step import OptimizerStep
from ssl_bf.training.step_stats import StepStats
from ssl_bf.training.stop_signals import StopSignals
from ssl_bf.training.trackers import log_row, start_trackers


@dataclass(frozen=True)
class EpochEnd:
    """What a monitor is given at an epoch end (on every process)."""
    epoch: int  # epochs done
    step: int  # optimizer steps done
    last: bool  # training ends here (the last epoch, or train.max_steps reached)
    backbone: torch.nn.Module  # the training backbone, unwrapped (this process's copy)
    accelerator: object
    probe: object = None  # the OnlineProbe (probe.online), or None


# A monitor runs at epoch ends on every process: EpochEnd -> metrics or None.
Monitor = Callable[[EpochEnd], "dict | None"]


class Trainer:
    def __init__(self, cfg: Config, monitors: tuple[Monitor, ...] = ()):
        self.cfg, self.monitors = cfg, monitors
        self.out = Path(cfg.train.output_dir)
        self.acc = make_accelerator(cfg, find_unused=cfg.bf.enabled and cfg.bf.start_epoch > 0,
                                    trackers=True)
        self.lock = acquire_for_run(self.out, self.acc)  # before anything is written or read
        self.resume_from, self.changes = self._check_resume()
        self.threads = set_threads(cfg, self.acc)
        warn_slow_bf16(cfg, self.acc)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.source = build_source(cfg.data, "pretrain", cfg.data.subset, cfg.data.imbalance)
        self.plan = make_plan(cfg, self.world, len(self.source))
        self.input = PretrainInput(cfg, self.source, self.rank, self.world,
                                   default_workers(cfg.data, local_processes(), cfg.aug.batched),
                                   self.acc.device)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
        self.method = build_method(cfg, self.world)
        if cfg.train.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg, self.method)
        self.probe = online_probe(cfg, self.method.backbone, self.source, self.world, self.acc.device)
        self.state = self._resume()
        self.model, self.optimizer = self.acc.prepare(self.method, self.optimizer)
        if cfg.train.compile:
            self.model = torch.compile(self.model)
        self.log = MetricsLog(self.out / "metrics.jsonl", enabled=self.acc.is_main_process)
        self.watch = CollapseWatch(self.method.chance_loss(), self.plan.total_steps)
        self.stats = StepStats(self.acc)
        trainable = [p for p in self.method.parameters() if p.requires_grad]
        self.step = OptimizerStep(self.model, self.method, self.acc, self.optimizer, self.stats,
                                  None if cfg.train.precision == "fp16" else trainable)
        self.signals = StopSignals()
        # Agreed by every process at a step's checks (a signal may reach only one of them);
        # the signal itself stays recorded in self.signals until then.
        self.stopping = False
        self.reported_bad: set[int] = set()

    # --- set-up -------------------------------------------------------------

    def _check_resume(self) -> tuple[Path | None, list[dict]]:
        """Where to resume from and the config changes that makes (checked before any data
        is read: a changed key that alters training stops the launch here)."""
        path = resolve_resume(self.cfg.train.resume, self.out)
        if path is None:
            if self.cfg.train.resume is None and (self.out / "checkpoints").exists():
                raise UsageError(f"train.output_dir: {self.out} already holds a run; continue it "
                                 "with train.resume=auto or choose another train.output_dir")
            return None, []
        return path, check_resume(self.cfg, run_dir_of(path))

    def _resume(self) -> TrainState:
        if self.resume_from is None:
            return TrainState(pretrain_images=len(self.source))
        state = restore(self.resume_from, self.method, self.optimizer, self.probe, len(self.source),
                        self.cfg.data.root, self._say)
        self._say(f"resuming from {self.resume_from} at step {state.step} (epoch {state.epoch})")
        return state

    # --- the loop -------------------------------------------------------------

    def fit(self) -> Path:
        try:
            return self._fit()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _fit(self) -> Path:
        if self.acc.is_main_process:
            header = describe_split(self.source)
            self._say(header)
            for note in record_changes(self.out, self.changes, self.state.step):
                self._say(note)
            with storage(self.out, self.out / "config.yaml"):
                save_config(self.cfg, self.out / "config.yaml", header=header)
                self.log.truncate_after(self.state.step)
        start_trackers(self.acc, self.cfg)
        self.acc.wait_for_everyone()
        self.started = time.time()
        with self.signals, self._progress() as bar:
            while self.state.step < self.plan.total_steps and not self.stopping:
                self._run_epoch(bar)
        if self.stopping:
            self._checkpoint()
            self._say(f"stopped by {self.signals.name} at step {self.state.step}; "
                      "continue with train.resume=auto")
            return self.out
        self._finish()
        return self.out

    def _run_epoch(self, bar) -> None:
        s, cfg = self.state, self.cfg
        batches = self.input.epoch(s.epoch, s.step_in_epoch)
        epoch_end = s.step - s.step_in_epoch + self.plan.steps_per_epoch
        while s.step < min(epoch_end, self.plan.total_steps) and not self.stopping:
            micro = [next(batches) for _ in range(cfg.train.accumulate)]
            self._train_step(micro)
            bar.update(1)
            if cfg.train.checkpoint_every and s.step % cfg.train.checkpoint_every == 0:
                self._checkpoint()
        if s.step_in_epoch >= self.plan.steps_per_epoch:
            s.epoch, s.step_in_epoch = s.epoch + 1, 0
            self._checkpoint()
            self._run_monitors(s.epoch)

    def _train_step(self, micro: list) -> None:
        s, cfg, plan = self.state, self.cfg, self.plan
        seed_step(cfg.train.seed, s.step, self.rank)
        result = self.step((self._views(batch) for batch in micro), len(micro),
                           lr=lr_at(s.step, plan.total_steps, plan.warmup_steps, plan.lr,
                                    cfg.train.schedule),
                           momentum=momentum_at(s.step + 1, plan.total_steps, cfg.method.momentum,
                                                cfg.method.momentum_end),
                           bf_on=s.step >= plan.bf_start_step, stop=lambda: self.signals.stop)
        self.stopping = result.stop
        if not result.finite:
            self._on_nonfinite(result.outputs)
        elif self.probe is not None:
            self.probe.update([batch.index for batch in micro],
                              lr_at(s.step, plan.total_steps, 0, plan.probe_lr, cfg.train.schedule))
        s.step, s.step_in_epoch = s.step + 1, s.step_in_epoch + 1
        # every log_every steps, and the first step and each epoch's end, so that a short
        # run's curves have more than two points and each kNN line has its loss beside it
        if (s.step % cfg.train.log_every == 0 or s.step in (1, plan.total_steps)
                or s.step_in_epoch == plan.steps_per_epoch):
            self._log_train()

    def _note_bad_images(self, bad: torch.Tensor) -> None:
        for i in bad[bad >= 0].tolist():
            self.state.replaced_images += 1
            if i not in self.reported_bad:
                self.reported_bad.add(i)
                print(f"warning: unreadable image replaced by the next one "
                      f"({self.state.replaced_images} replacements so far): "
                      f"{self.source.name(i)}", file=sys.stderr, flush=True)

    def _views(self, batch: Batch) -> list[torch.Tensor]:
        self._note_bad_images(batch.bad)
        return self.input.views(batch)

    def _on_nonfinite(self, outputs: list) -> None:
        s = self.state
        if self.cfg.train.on_nan == "skip":
            s.nan_skips += 1
            self._say(f"warning: non-finite loss at step {s.step + 1}: step skipped "
                      f"({s.nan_skips} so far)")
            return
        raise TrainingFailed(f"non-finite loss ({outputs[-1].loss.item()}) at step {s.step + 1}; "
                             "the last checkpoint is untouched (lower train.lr, or train.on_nan=skip)")

    # --- logging, checkpoints, monitors -----------------------------------------

    def _log_train(self) -> None:
        s, cfg = self.state, self.cfg
        row = self.stats.summary(cfg.train.batch_size)
        collapsed = self.watch.update(s.step, row["spread"], row["loss_plain"])
        row = {"step": s.step, "epoch": round(s.step / self.plan.steps_per_epoch, 4),
               **row, "lr": self.optimizer.param_groups[0]["lr"], "time": round(self._elapsed(), 2)}
        if collapsed:
            row["collapse"] = True
            self._say(self.watch.message(s.step, row["spread"], row["loss_plain"]))
        if s.nan_skips:
            row["nan_skips"] = s.nan_skips
        if s.replaced_images:
            row["replaced_images"] = s.replaced_images
        self._write_log(row)
        log_row(self.acc, cfg, row, s.step)
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.3g}",
                             sps=f"{row['samples_per_s']:.0f}", refresh=False)

    def _elapsed(self) -> float:
        """Seconds of this run so far, earlier launches included."""
        return self.state.train_seconds + time.time() - self.started

    def _checkpoint(self) -> None:
        self.acc.wait_for_everyone()
        check_weights_finite(self.method, self.state.step)
        failure = [None]
        if self.acc.is_main_process:
            state = asdict(self.state)
            state["train_seconds"] = self._elapsed()
            state["world_size"] = self.world
            try:
                with storage(self.out, self.out / "checkpoints" / f"step_{self.state.step:08d}"):
                    save_checkpoint(self.out / "checkpoints", self.state.step,
                                    *states_to_save(self.method, self.optimizer, self.probe), state,
                                    self.cfg.train.keep_checkpoints)
            except TrainingFailed as err:
                failure = [str(err)]
        if self.world > 1:  # the others must not wait for a checkpoint that never comes
            failure = broadcast_object_list(failure, from_process=0)
        if failure[0]:
            raise TrainingFailed(failure[0])
        self.acc.wait_for_everyone()

    def _write_log(self, row: dict) -> None:
        with storage(self.out, self.log.path):
            self.log.write(row)

    def _run_monitors(self, epoch: int) -> None:
        last = epoch >= self.cfg.train.epochs or self.state.step >= self.plan.total_steps
        end = EpochEnd(epoch, self.state.step, last, self.method.backbone, self.acc, self.probe)
        for monitor in self.monitors:
            row = monitor(end)
            if row:  # `time`: wall-clock of training so far, the monitor's own time included
                self._write_log({"step": self.state.step, "epoch": epoch, **row,
                                 "time": round(self._elapsed(), 2)})
                log_row(self.acc, self.cfg, row, self.state.step)
                if "knn_top1" in row:
                    self.bar.set_postfix(knn=f"{row['knn_top1']:.2f}", refresh=False)

    def _finish(self) -> None:
        if self.state.step_in_epoch:  # stopped by max_steps inside an epoch
            self._checkpoint()
            self._run_monitors(self.state.epoch)
        check_weights_finite(self.method, self.state.step)
        if self.acc.is_main_process:
            with storage(self.out, self.out / BACKBONE_FILE):
                export_backbone(self.method.backbone, self.cfg.model, self.cfg.data.image_size,
                                self.out / BACKBONE_FILE)
        self.acc.wait_for_everyone()
        self._say(f"done: {self.state.step} steps; backbone at {self.out / BACKBONE_FILE}")
        self.acc.end_training()

    def _progress(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.plan.total_steps, initial=self.state.step, unit="step",
                        disable=not self.acc.is_main_process, dynamic_ncols=True, mininterval=1.0)
        return self.bar

    def _say(self, message: str) -> None:
        """A line above the progress bar; warnings on stderr, the rest on stdout."""
        if self.acc.is_main_process:
            stream = sys.stderr if message.startswith("warning") else sys.stdout
            try:
                if hasattr(self, "bar"):
                    self.bar.write(message, file=stream)
                else:
                    print(message, file=stream, flush=True)
            except BrokenPipeError:
                # Whoever read this stream is gone (a killed driver or shell): the run goes on,
                # checkpoints and exits as usual, its lines now go nowhere (the "Note on
                # SIGPIPE" of Python's signal docs: point the descriptor at devnull).
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
