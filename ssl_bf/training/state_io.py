"""What a checkpoint holds for the engine, and how it is written and restored.

The tensors are the method's state dict (and the online probe's head under its prefix);
the optimizer file holds the main optimizer's state (and the probe's under the same
prefix); trainer_state.json holds TrainState. Writing them is rundir/run_dir.py's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ssl_bf.errors import TrainingFailed, UsageError
from ssl_bf.rundir.checkpoint import load_checkpoint
from ssl_bf.rundir.resume_check import check_shapes
from ssl_bf.training.online_probe import OnlineProbe


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress
    step_in_epoch: int = 0
    nan_skips: int = 0
    replaced_images: int = 0
    train_seconds: float = 0.0  # wall time spent training before this launch
    pretrain_images: int = 0  # the size of the pretraining split (0: not recorded)
    scaler: dict | None = None  # fp16's GradScaler (its scale and growth tracker), else None


def states_to_save(method: nn.Module, optimizer, probe: OnlineProbe | None) -> tuple[dict, dict]:
    """(model tensors, optimizer state) to checkpoint; the online probe rides along."""
    model, optim = method.state_dict(), optimizer.state_dict()
    if probe is not None:
        model = {**model, **probe.state_tensors()}
        optim = {**optim, OnlineProbe.PREFIX: probe.optimizer.state_dict()}
    return model, optim


def restore(path: Path, method: nn.Module, optimizer, probe: OnlineProbe | None, images: int,
            data_root: str, say: Callable[[str], None]) -> TrainState:
    """Load a checkpoint into the method, optimizer and probe; its TrainState."""
    model_state, optimizer_state, trainer_state = load_checkpoint(path)
    probe_state = optimizer_state.pop(OnlineProbe.PREFIX, None)
    if probe is not None and not probe.load(model_state, probe_state):
        say(f"warning: {path} holds no online probe; it starts from scratch here")
    model_state = {k: v for k, v in model_state.items() if not k.startswith(OnlineProbe.PREFIX)}
    check_shapes(model_state, method.state_dict(), path)
    method.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    known = TrainState.__dataclass_fields__
    state = TrainState(**{k: v for k, v in trainer_state.items() if k in known})
    if state.pretrain_images and state.pretrain_images != images:
        raise UsageError(f"data.root: the pretraining split at {data_root} holds {images} images, "
                         f"the run was trained on {state.pretrain_images}")
    state.pretrain_images = images
    return state


def check_weights_finite(method: nn.Module, step: int, accelerator) -> None:
    """Never write non-finite weights: an update can overflow with a finite gradient. Each
    process checks its own copy (buffers such as BN statistics differ between them) and all
    agree, so they stop together."""
    tensors = [t for t in method.state_dict().values() if t.is_floating_point()]
    bad = (~torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()).float()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad.to(accelerator.device), reduction="sum")
    if bad.item():
        raise TrainingFailed(f"non-finite weights after step {step}; not saved, the last "
                             f"checkpoint is untouched (lower train.lr) - on {int(bad.item())} of "
                             f"{accelerator.num_processes} processes")


def scaler_state(scaler) -> dict | None:
    """fp16's GradScaler as plain numbers for trainer_state.json (None without one): a resume
    must not start again from the initial scale 65536 and skip steps to find its way back."""
    return None if scaler is None else dict(scaler.state_dict())


def load_scaler(scaler, state: dict | None) -> None:
    if scaler is not None and state:
        scaler.load_state_dict(state)
