"""Resume keeps a run's history true: what may change between launches, and the record.

On resume the new resolved config is compared with the run's config.yaml. Keys that
only extend or observe the run may change (OBSERVING below); each change is logged and
appended to `config_changes.jsonl` with the step it took effect from. Any other change
stops the launch with one `error:` line naming the keys, unless the user lists them in
`train.allow_changes` (then they are recorded the same way, marked as forced).
"""
from __future__ import annotations

import fnmatch
import json
import time
from pathlib import Path

from ssl_bf.config import flatten, read_saved_config, to_dict
from ssl_bf.config.schema import Config
from ssl_bf.errors import UsageError
from ssl_bf.rundir.checkpoint import state_mismatch

CHANGES_FILE = "config_changes.jsonl"

# Longer or shorter training, more or fewer checkpoints and logs, other monitors, other
# machines: none of these changes how the weights so far were trained.
OBSERVING = ("train.epochs", "train.max_steps", "train.checkpoint_every", "train.keep_checkpoints",
             "train.log_every", "train.threads", "train.output_dir", "data.num_workers",
             "data.root", "data.cache_gb", "knn.*", "linear.*", "log.*",
             "probe.*")  # the online probe observes: the backbone trains the same without it
IGNORED = ("recipe", "train.resume", "train.allow_changes")  # about this launch, not the run


def matches(key: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def config_changes(old: dict, new: Config) -> list[dict]:
    """[{key, from, to}] for every key whose value differs (keys new since the run: skipped
    when their value is the default the old run implicitly had)."""
    before, after = flatten(old), flatten(to_dict(new))
    defaults = flatten(to_dict(Config()))
    changes = []
    for key in sorted(after):
        if key in IGNORED:
            continue
        was = before.get(key, defaults.get(key))
        if was != after[key]:
            changes.append({"key": key, "from": was, "to": after[key]})
    return changes


def check_resume(cfg: Config, run_dir: Path) -> list[dict]:
    """The changes this launch makes to the run in `run_dir`, each marked `observes` or
    `forced`; raises UsageError for a change that is neither."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return []
    changes = config_changes(read_saved_config(saved), cfg)
    for change in changes:
        if matches(change["key"], OBSERVING):
            change["allowed"] = "observes"
        elif matches(change["key"], cfg.train.allow_changes):
            change["allowed"] = "forced"
    refused = [c for c in changes if "allowed" not in c]
    if refused:
        shown = ", ".join(f"{c['key']} ({c['from']} -> {c['to']})" for c in refused[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        keys = ",".join(c["key"] for c in refused)
        raise UsageError(f"train.resume: this launch changes how the run in {run_dir} trains: "
                         f"{shown}{more}; resume with its own settings, or allow it explicitly "
                         f"with train.allow_changes=[{keys}]")
    return changes


def record_changes(run_dir: Path, changes: list[dict], step: int) -> list[str]:
    """Append the changes to config_changes.jsonl; returns the log lines to print."""
    if not changes:
        return []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(run_dir / CHANGES_FILE, "a") as f:
        for change in changes:
            f.write(json.dumps({"step": step, "time": stamp, **change}) + "\n")
    return [f"note: from step {step}, {c['key']}: {c['from']} -> {c['to']} ({c['allowed']})"
            for c in changes]


def run_dir_of(checkpoint: Path) -> Path:
    """RUN for RUN/checkpoints/step_N (or RUN/checkpoints/last)."""
    checkpoint = Path(checkpoint)
    return (checkpoint.parent.parent if checkpoint.parent.name == "checkpoints"
            else checkpoint.parent)


def check_shapes(model_state: dict, own_state: dict, path: Path) -> None:
    """A checkpoint that does not fit the model: one line naming the first mismatch."""
    mismatch = state_mismatch(own_state, model_state)
    if mismatch:
        raise UsageError(f"train.resume: {path} does not fit this model: {mismatch}")
