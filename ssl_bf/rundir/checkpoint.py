"""Checkpoints: atomic, rotated, safe to load, portable across world sizes.

    checkpoints/step_00001234/   model.safetensors  optimizer.pt  trainer_state.json
    checkpoints/last -> step_00001234

A checkpoint is written into a hidden temporary directory and renamed into
place, then `last` is re-pointed with an atomic symlink swap: a crash at any
moment leaves the previous checkpoint complete and findable. Loading never
unpickles: tensors come from safetensors or `torch.load(weights_only=True)`,
everything else from JSON. (accelerate's save_state pickles its RNG states and
reloads them with weights_only=False, so it is not used; the training RNG is
re-derived from (seed, step) instead, which also makes resume exact.)
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ssl_bf.errors import UsageError

MODEL, OPTIMIZER, STATE = "model.safetensors", "optimizer.pt", "trainer_state.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tensors(state: dict) -> dict:
    """safetensors wants contiguous tensors that share no storage."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_checkpoint(root: str | os.PathLike, step: int, model_state: dict, optimizer_state: dict,
                    trainer_state: dict, keep: int = 2) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(tmp, model_state, optimizer_state, trainer_state)
    except (OSError, SafetensorError):  # a full disk, no permission: leave nothing half-written
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # the same step saved again (e.g. epoch end == checkpoint_every)
        shutil.rmtree(final)
    os.replace(tmp, final)
    link_tmp = root / f".last-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(final.name, link_tmp)
    last = root / "last"
    if last.is_dir() and not last.is_symlink():  # a run copied with `cp -r` made it a folder
        shutil.rmtree(last)
    os.replace(link_tmp, last)
    _fsync_dir(root)
    _rotate(root, keep)
    return final


def _write(tmp: Path, model_state: dict, optimizer_state: dict, trainer_state: dict) -> None:
    tmp.mkdir()
    save_file(_tensors(model_state), str(tmp / MODEL))
    torch.save(optimizer_state, tmp / OPTIMIZER)
    (tmp / STATE).write_text(json.dumps(trainer_state, indent=1))
    for name in (MODEL, OPTIMIZER, STATE):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())


def _rotate(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    current = (root / "last").resolve()
    for old in done[:-keep]:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):  # left by a crash during a write
        shutil.rmtree(stale, ignore_errors=True)


def is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in (MODEL, OPTIMIZER, STATE))


def find_latest(root: str | os.PathLike) -> Path | None:
    """`last` if it is complete, else the newest complete step_* directory."""
    root = Path(root)
    last = root / "last"
    if last.exists() and is_complete(last):
        return last.resolve()
    done = sorted((p for p in root.glob("step_*") if p.is_dir() and is_complete(p)), reverse=True)
    return done[0] if done else None


def _check_complete(path: Path) -> None:
    if not is_complete(path):
        raise UsageError(f"train.resume: {path} is not a complete checkpoint "
                         f"(needs {MODEL}, {OPTIMIZER}, {STATE})")


def _trainer_state(path: Path) -> dict:
    try:
        return json.loads((path / STATE).read_text())
    except ValueError as err:
        raise UsageError(f"{path / STATE} is not valid JSON: {err}") from None


def checkpoint_step(path: str | os.PathLike) -> int:
    """The optimizer steps a checkpoint was written after (its trainer_state.json alone)."""
    path = Path(path)
    _check_complete(path)
    return int(_trainer_state(path).get("step", 0))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(model_state, optimizer_state, trainer_state) - without unpickling anything."""
    path = Path(path)
    _check_complete(path)
    model_state = load_safetensors(path / MODEL)
    try:
        with warnings.catch_warnings():  # torch warns before refusing; the error says it all
            warnings.simplefilter("ignore")
            optimizer_state = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise UsageError(f"refusing to load {path / OPTIMIZER}: it is not a plain tensor file "
                         f"({str(err).splitlines()[0]})") from None
    return model_state, optimizer_state, _trainer_state(path)


def state_mismatch(own: dict, state: dict) -> str | None:
    """The first way `state` does not fit a module whose state dict is `own` (a tensor
    missing, one unexpected, one of another shape) and the counts, or None when it fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or wrong):
        return None
    first = (f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'" if unexpected
             else f"'{wrong[0]}' is {tuple(state[wrong[0]].shape)} in the checkpoint, "
                  f"{tuple(own[wrong[0]].shape)} here")
    counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped"
    return f"{first} ({counts})"


def load_safetensors(path: str | os.PathLike) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UsageError(f"cannot read {path} as safetensors: {str(err).splitlines()[0]}") from None


def resolve_resume(resume: str | None, output_dir: str | os.PathLike) -> Path | None:
    """train.resume: null -> None; auto -> latest in this run (or None); PATH -> it."""
    if resume is None:
        return None
    if resume == "auto":
        return find_latest(Path(output_dir) / "checkpoints")
    path = Path(resume).expanduser()
    if path.is_dir() and (path / "checkpoints").is_dir():  # a run directory
        found = find_latest(path / "checkpoints")
        if found is None:
            raise UsageError(f"train.resume: no complete checkpoint under {path}/checkpoints")
        return found
    if not path.exists():
        raise UsageError(f"train.resume: {path} does not exist")
    return path
