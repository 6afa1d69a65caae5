"""Experiment trackers through accelerate: `log.with=tensorboard|wandb|none`.

The tracker gets the flattened config as hyperparameters and every training and
monitor row of metrics.jsonl. Asking for one that is not installed is a usage
error before training starts, never a crash mid-run.
"""
from __future__ import annotations

from accelerate.utils import is_tensorboard_available, is_wandb_available

from ssl_bf.config import flatten, to_dict
from ssl_bf.config.schema import Config
from ssl_bf.errors import UsageError

AVAILABLE = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}


def check_tracker(cfg: Config) -> str | None:
    """The accelerate `log_with` value, or None; raises when the package is missing."""
    name = cfg.log.with_
    if name == "none":
        return None
    if not AVAILABLE[name]():
        raise UsageError(f"log.with={name}: {name} is not installed "
                         f"(pip install -e \".[{name}]\", or log.with=none)")
    return name


def flat_hparams(cfg: Config) -> dict:
    """{'train.lr': 0.3, 'knn.k': '[20, 200]', ...}: scalars only, as trackers want."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in flatten(to_dict(cfg)).items()}


def start_trackers(accelerator, cfg: Config) -> None:
    if cfg.log.with_ != "none" and accelerator.log_with:
        accelerator.init_trackers(cfg.log.project, config=flat_hparams(cfg))


def log_row(accelerator, cfg: Config, row: dict, step: int) -> None:
    if cfg.log.with_ != "none" and accelerator.log_with:
        accelerator.log({k: v for k, v in row.items()
                         if isinstance(v, (int, float)) and k != "step"},
                        step=step)
