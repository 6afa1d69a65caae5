"""`checkpoint=` for the evaluation CLIs: what to evaluate, and with which config.

    checkpoint=RUN_DIR           the run's config.yaml is the base config; weights from
                                 RUN_DIR/backbone.safetensors, or - while the run is
                                 still training - the query backbone of checkpoints/last
    checkpoint=FILE.safetensors  an exported backbone; architecture from its metadata,
                                 data from recipe= / data.* (defaults: CIFAR-10 at data/cifar10)
    checkpoint=random            an untrained backbone (needs recipe= or model.* keys),
                                 drawn as pretraining draws it from train.seed: the
                                 starting point of a run with the same config

Everything else on the command line is `key=value` for load_config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssl_bf.config import load_config, read_saved_config, to_dict
from ssl_bf.config.schema import Config
from ssl_bf.errors import UsageError
from ssl_bf.methods.base import Method
from ssl_bf.models.backbones import build_backbone
from ssl_bf.rundir.checkpoint import MODEL, find_latest, load_safetensors, state_mismatch
from ssl_bf.rundir.export import (
    BACKBONE_FILE,
    load_backbone_into,
    model_config_from_metadata,
    read_metadata,
)

USAGE = "checkpoint=RUN_DIR|FILE.safetensors|random"


@dataclass
class EvalTarget:
    cfg: Config
    backbone: nn.Module
    name: str  # what was loaded, for the printed table


def split_checkpoint(argv: list[str]) -> tuple[str, list[str]]:
    """('checkpoint' value, the other arguments); checkpoint= is not a config key."""
    found = [a.partition("=")[2] for a in argv if a.startswith("checkpoint=")]
    rest = [a for a in argv if not a.startswith("checkpoint=")]
    if not found or not found[-1]:
        raise UsageError(f"{USAGE} is required")
    if len(found) > 1:
        raise UsageError("checkpoint= given more than once")
    return found[0], rest


def load_target(argv: list[str]) -> EvalTarget:
    checkpoint, rest = split_checkpoint(argv)
    if checkpoint == "random":
        return _random(rest)
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return _run_dir(path, rest)
    if path.is_file() and path.suffix == ".safetensors":
        return _file(path, rest)
    if path.exists():
        raise UsageError(f"checkpoint: {path} is neither a run directory nor a .safetensors file")
    raise UsageError(f"checkpoint: {path} does not exist ({USAGE})")


def _random(rest: list[str]) -> EvalTarget:
    if not any(a.startswith(("recipe=", "model.")) for a in rest):
        raise UsageError("checkpoint=random needs the architecture: recipe=NAME or model.* keys")
    cfg = load_config(rest)
    # Trainer seeds with train.seed and builds the backbone first: same draw, same weights.
    torch.manual_seed(cfg.train.seed)
    return EvalTarget(cfg, build_backbone(cfg.model, cfg.data.image_size),
                      f"random init (seed {cfg.train.seed})")


def _run_dir(path: Path, rest: list[str]) -> EvalTarget:
    if not (path / "config.yaml").is_file():
        raise UsageError(f"checkpoint: {path} is not a run directory (no config.yaml)")
    cfg = load_config(rest, base=read_saved_config(path / "config.yaml"))
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    exported = path / BACKBONE_FILE
    if exported.is_file():
        return EvalTarget(cfg, load_backbone_into(backbone, exported), str(exported))
    latest = find_latest(path / "checkpoints")
    if latest is None:
        raise UsageError(f"checkpoint: {path} has neither {BACKBONE_FILE} nor a complete "
                         "checkpoint")
    state = load_safetensors(latest / MODEL)
    own = {k[len(Method.BACKBONE_PREFIX):]: v for k, v in state.items()
           if k.startswith(Method.BACKBONE_PREFIX)}
    _load_strict(backbone, own, latest / MODEL)
    return EvalTarget(cfg, backbone, str(latest / MODEL))


def _load_strict(backbone: nn.Module, state: dict, source: Path) -> None:
    mismatch = state_mismatch(backbone.state_dict(), state)
    if mismatch:
        raise UsageError(f"checkpoint {source} does not match the backbone: {mismatch}")
    backbone.load_state_dict(state, strict=True)

def _file(path: Path, rest: list[str]) -> EvalTarget:
    meta = read_metadata(path)
    try:
        model, image_size = model_config_from_metadata(meta)
    except UsageError:  # a file without our metadata: the architecture comes from the CLI
        cfg = load_config(rest)
        return EvalTarget(cfg,
                          load_backbone_into(build_backbone(cfg.model, cfg.data.image_size), path),
                          str(path))
    given = [a.partition("=")[0] for a in rest if a.startswith("model.")]
    if given:
        raise UsageError(f"{given[0]}: the architecture of {path} comes from its metadata")
    # recipe= / data.* set the data; the file's architecture (and image size,
    # unless data.image_size= is given) then replaces the recipe's.
    tree = to_dict(load_config(rest))
    tree.pop("recipe", None)
    tree["model"] = to_dict(model)
    if not any(a.startswith("data.image_size=") for a in rest):
        tree["data"]["image_size"] = image_size
    cfg = load_config([], base=tree)
    return EvalTarget(cfg, load_backbone_into(build_backbone(cfg.model, cfg.data.image_size), path),
                      str(path))


def open_for_eval(argv: list[str]) -> tuple[EvalTarget, object, nn.Module]:
    """What both evaluation CLIs start from: the target, its Accelerator (threads set), and
    the backbone on the device in the memory format the run trained in."""
    from ssl_bf.training.runtime import make_accelerator, prepare_process

    target = load_target(argv)
    acc = make_accelerator(target.cfg)
    prepare_process(target.cfg, acc)
    backbone = target.backbone.to(acc.device)
    if target.cfg.train.channels_last:  # extract_features feeds NHWC images
        backbone.to(memory_format=torch.channels_last)
    return target, acc, backbone
