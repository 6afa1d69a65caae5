"""The pretraining loop: accelerate's prepare / backward idiom around a method.

One optimizer step = one global batch (train.batch_size samples over all processes and
accumulation steps). Schedules are per step; checkpoints are written at epoch ends (and every
train.checkpoint_every steps) and restore everything - model, key encoder, queue, optimizer,
position in the epoch. The run directory (rundir/run_dir.py) does the reading and writing.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from ssl_bf.config.derived import make_plan
from ssl_bf.config.schema import Config
from ssl_bf.data.bad_images import BadImageLog
from ssl_bf.data.pipeline import build_source, describe_split
from ssl_bf.data.pretrain_input import Batch, PretrainInput, loader_workers
from ssl_bf.errors import TrainingFailed
from ssl_bf.methods import build_method
from ssl_bf.rundir.run_dir import RunDir
from ssl_bf.training.collapse import CollapseWatch
from ssl_bf.training.console import Console
from ssl_bf.training.monitors import EpochEnd, Monitor
from ssl_bf.training.online_probe import online_probe
from ssl_bf.training.optim import build_optimizer
from ssl_bf.training.runtime import local_processes, make_accelerator, prepare_process, seed_step
from ssl_bf.training.schedules import lr_at, momentum_at
from ssl_bf.training.state_io import (
    TrainState,
    check_weights_finite,
    load_scaler,
    restore,
    scaler_state,
    states_to_save,
)
from ssl_bf.training.step import OptimizerStep
from ssl_bf.training.step_stats import StepStats
from ssl_bf.training.stop_signals import StopSignals
from ssl_bf.training.trackers import log_row, start_trackers


class Trainer:
    def __init__(self, cfg: Config,
                 monitors: Callable[[Config], tuple[Monitor, ...]] = lambda cfg: ()):
        """`monitors` builds the epoch-end monitors once the data is there (data.download)."""
        self.cfg = cfg
        self.acc = make_accelerator(cfg, find_unused=cfg.bf.enabled and cfg.bf.start_epoch > 0,
                                    trackers=True)
        self.console = Console(self.acc.is_main_process)
        self.run = RunDir(cfg, self.acc, self.console.say)  # locked, resume point checked
        prepare_process(cfg, self.acc, training=True)  # threads, CUDA flags, data.download
        self.monitors = monitors(cfg)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.source = build_source(cfg.data, "pretrain", cfg.data.subset, cfg.data.imbalance)
        self.plan = make_plan(cfg, self.world, len(self.source))
        self.input = PretrainInput(cfg, self.source, self.rank, self.world,
                                   loader_workers(cfg, self.source, local_processes()),
                                   self.acc.device)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
        self.method = build_method(cfg, self.world)
        if cfg.train.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg, self.method)
        self.probe = online_probe(cfg, self.method.backbone, self.source, self.world,
                                  self.acc.device)
        self.state = self._resume()
        self.model, self.optimizer = self.acc.prepare(self.method, self.optimizer)
        if cfg.train.compile:
            self.model = torch.compile(self.model)
        self.watch = CollapseWatch(self.method.chance_loss(), self.plan.total_steps)
        self.stats = StepStats(self.acc)
        trainable = [p for p in self.method.parameters() if p.requires_grad]
        self.step = OptimizerStep(self.model, self.method, self.acc, self.optimizer, self.stats,
                                  None if cfg.train.precision == "fp16" else trainable)
        self.signals = StopSignals()
        # Agreed by every process at a step's checks (a signal may reach only one of them);
        # the signal itself stays recorded in self.signals until then.
        self.stopping = False
        self.bad_images = BadImageLog(self.source.name)
        self.started = time.time()

    def _resume(self) -> TrainState:
        if self.run.resume_from is None:
            return TrainState(pretrain_images=len(self.source))
        state = restore(self.run.resume_from, self.method, self.optimizer, self.probe,
                        len(self.source), self.cfg.data.root, self.console.say)
        self.run.check_loaded(state.step)
        load_scaler(self.acc.scaler, state.scaler)
        self.console.say(f"resuming from {self.run.resume_from} at step {state.step} "
                         f"(epoch {state.epoch})")
        return state

    # --- the loop -------------------------------------------------------------

    def fit(self) -> Path:
        try:
            return self._fit()
        finally:
            self.run.close()

    def _fit(self) -> Path:
        self.run.begin(describe_split(self.source), self.state.step)
        start_trackers(self.acc, self.cfg)
        self.acc.wait_for_everyone()
        self.started = time.time()
        with self.signals, self.console.progress(self.plan.total_steps, self.state.step) as bar:
            while self.state.step < self.plan.total_steps and not self.stopping:
                self._run_epoch(bar)
        if self.stopping:
            self._checkpoint()
            self.console.say(f"stopped by {self.signals.name} at step {self.state.step}; "
                             "continue with train.resume=auto")
        else:
            self._finish()
        return self.run.path

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

    def _train_step(self, micro: list[Batch]) -> None:
        s, cfg, plan = self.state, self.cfg, self.plan
        seed_step(cfg.train.seed, s.step, self.rank)
        # read the device's flags every check_every steps only; on_nan=skip must decide
        # before every update, so it reads them every step
        check = cfg.train.on_nan == "skip" or (s.step + 1) % cfg.train.check_every == 0
        for batch in micro:
            s.replaced_images = self.bad_images.note(batch.bad, s.replaced_images)
        result = self.step((self.input.views(batch) for batch in micro), len(micro),
                           lr=lr_at(s.step, plan.total_steps, plan.warmup_steps, plan.lr,
                                    cfg.train.schedule),
                           momentum=momentum_at(s.step + 1, plan.total_steps, cfg.method.momentum,
                                                cfg.method.momentum_end),
                           step=s.step + 1, bf_on=s.step >= plan.bf_start_step, check=check,
                           stop=lambda: self.signals.stop)
        if result.check is not None:
            self.stopping = result.check.stop
            if not result.check.finite:
                self._on_nonfinite(result.check.first_bad)
        if result.applied and self.probe is not None:
            self.probe.update([batch.index for batch in micro],
                              lr_at(s.step, plan.total_steps, 0, plan.probe_lr, cfg.train.schedule))
        s.step, s.step_in_epoch = s.step + 1, s.step_in_epoch + 1
        # every log_every steps, and the first step and each epoch's end, so that a short
        # run's curves have more than two points and each kNN line has its loss beside it
        if (s.step % cfg.train.log_every == 0 or s.step in (1, plan.total_steps)
                or s.step_in_epoch == plan.steps_per_epoch):
            self._log_train()

    def _on_nonfinite(self, first_bad: int) -> None:
        s = self.state
        if self.cfg.train.on_nan == "skip":
            s.nan_skips += 1
            self.stats.forget_bad()
            self.console.say(f"warning: non-finite loss at step {s.step + 1}: step skipped "
                             f"({s.nan_skips} so far)")
            return
        raise TrainingFailed(f"non-finite loss or gradient at step {first_bad}; the last "
                             "checkpoint is untouched (lower train.lr, or train.on_nan=skip)")

    # --- logging, checkpoints, monitors -----------------------------------------

    def _log_train(self) -> None:
        s, cfg = self.state, self.cfg
        row = self.stats.summary(cfg.train.batch_size)
        collapsed = self.watch.update(s.step, row["spread"], row["loss_plain"])
        row = {"step": s.step, "epoch": round(s.step / self.plan.steps_per_epoch, 4),
               **row, "lr": self.optimizer.param_groups[0]["lr"], "time": round(self._elapsed(), 2)}
        if collapsed:
            row["collapse"] = True
            self.console.say(self.watch.message(s.step, row["spread"], row["loss_plain"]))
        row |= {k: n for k, n in (("nan_skips", s.nan_skips),
                                  ("replaced_images", s.replaced_images)) if n}
        self.run.log(row)
        log_row(self.acc, cfg, row, s.step)
        self.console.show(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.3g}",
                          sps=f"{row['samples_per_s']:.0f}")

    def _elapsed(self) -> float:
        """Seconds of this run so far, earlier launches included."""
        return self.state.train_seconds + time.time() - self.started

    def _checkpoint(self) -> None:
        self.acc.wait_for_everyone()
        verdict = self.stats.check(False)  # nothing non-finite since the last check
        if not verdict.finite:
            self._on_nonfinite(verdict.first_bad)
        check_weights_finite(self.method, self.state.step, self.acc)
        trainer_state = {**asdict(self.state), "train_seconds": self._elapsed(),
                         "world_size": self.world, "scaler": scaler_state(self.acc.scaler)}
        self.run.checkpoint(self.state.step,
                            lambda: states_to_save(self.method, self.optimizer, self.probe),
                            trainer_state)
        self.acc.wait_for_everyone()

    def _run_monitors(self, epoch: int) -> None:
        last = epoch >= self.cfg.train.epochs or self.state.step >= self.plan.total_steps
        end = EpochEnd(epoch, self.state.step, last, self.method.backbone, self.acc, self.probe)
        for monitor in self.monitors:
            row = monitor(end)
            if row:  # `time`: wall-clock of training so far, the monitor's own time included
                self.run.log({"step": self.state.step, "epoch": epoch, **row,
                              "time": round(self._elapsed(), 2)})
                log_row(self.acc, self.cfg, row, self.state.step)
                if "knn_top1" in row:
                    self.console.show(knn=f"{row['knn_top1']:.2f}")

    def _finish(self) -> None:
        if self.state.step_in_epoch:  # stopped by max_steps inside an epoch
            self._checkpoint()
            self._run_monitors(self.state.epoch)
        check_weights_finite(self.method, self.state.step, self.acc)
        path = self.run.export(self.method.backbone)
        self.acc.wait_for_everyone()
        self.console.say(f"done: {self.state.step} steps; backbone at {path}")
        self.acc.end_training()
