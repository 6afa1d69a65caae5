"""Every numeric key has a range, and a value outside it is one `error:` line naming the
key and the range, raised by load_config before any data is read."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from ssl_bf.config import load_config
from ssl_bf.config.load import _key_name
from ssl_bf.config.ranges import RANGES, Range
from ssl_bf.config.schema import Config
from ssl_bf.errors import UsageError

# key -> (an invalid value, the range's words in the message); at least one per numeric key
INVALID = {
    "method.temperature": ("0", "positive"),
    "method.momentum": ("1.5", "in [0, 1]"),
    "method.momentum_end": ("-0.1", "in [0, 1]"),
    "method.queue_size": ("0", "at least 1"),
    "method.bn_splits": ("0", "at least 1"),
    "method.proj_hidden": ("0", "at least 1"),
    "method.proj_out": ("-3", "at least 1"),
    "method.proj_layers": ("0", "at least 1"),
    "method.pred_hidden": ("0", "at least 1"),
    "model.width": ("0", "in (0, 4]"),
    "model.patch_size": ("0", "at least 1"),
    "model.vit_depth": ("0", "at least 1"),
    "bf.layers": ("0", "at least 1"),
    "bf.heads": ("0", "at least 1"),
    "bf.dropout": ("1.0", "in [0, 1)"),
    "bf.ffn_dim": ("0", "at least 1"),
    "bf.loss_weight": ("-1", "at least 0"),
    "bf.lr_scale": ("-0.5", "at least 0"),
    "bf.start_epoch": ("-1", "at least 0"),
    "bf.gate_init": ("2", "in [0, 1]"),
    "data.subset": ("0", "at least 1"),
    "data.imbalance": ("0.5", "at least 1"),
    "data.image_size": ("4", "at least 8"),
    "data.num_workers": ("-1", "at least 0"),
    "data.cache_gb": ("-1", "at least 0"),
    "data.shard_cache_gb": ("0", "positive"),
    "aug.min_scale": ("0", "in (0, 1]"),
    "aug.cj_strength": ("-0.2", "at least 0"),
    "train.epochs": ("0", "at least 1"),
    "train.batch_size": ("1", "at least 2"),
    "train.max_steps": ("0", "at least 1"),
    "train.seed": ("-1", "in [0, 4294967295]"),
    "train.lr": ("-0.1", "positive"),
    "train.weight_decay": ("-1e-4", "at least 0"),
    "train.sgd_momentum": ("1.0", "in [0, 1)"),
    "train.lars_eta": ("0", "positive"),
    "train.betas": ("[0.9,1.5]", "every item must be in [0, 1)"),
    "train.warmup_epochs": ("-1", "at least 0"),
    "train.accumulate": ("0", "at least 1"),
    "train.checkpoint_every": ("-5", "at least 0"),
    "train.keep_checkpoints": ("0", "at least 1"),
    "train.log_every": ("0", "at least 1"),
    "train.check_every": ("0", "at least 1"),
    "train.threads": ("0", "at least 1"),
    "knn.every": ("-1", "at least 0"),
    "knn.k": ("[20,0]", "every item must be at least 1"),
    "knn.temperature": ("0", "positive"),
    "knn.test_subset": ("0", "at least 1"),
    "knn.batch_size": ("0", "at least 1"),
    "linear.epochs": ("0", "at least 1"),
    "linear.batch_size": ("0", "at least 1"),
    "linear.lr": ("0", "positive"),
    "linear.weight_decay": ("-1", "at least 0"),
    "linear.milestones": ("[60,-1]", "every item must be at least 1"),
    "linear.copies": ("0", "at least 1"),
    "probe.lr": ("0", "positive"),
    "probe.weight_decay": ("-0.1", "at least 0"),
}


def numeric_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Keys whose type is int or float (alone, optional or in a list), from the schema."""
    keys = []
    for f in dataclasses.fields(cls):
        kind, name = typing.get_type_hints(cls)[f.name], prefix + _key_name(f)
        if dataclasses.is_dataclass(kind):
            keys += numeric_keys(kind, name + ".")
            continue
        leaves = set(typing.get_args(kind)) or {kind}
        for leaf in list(leaves):
            leaves |= set(typing.get_args(leaf))
        if leaves & {int, float}:
            keys.append(name)
    return keys


def test_every_numeric_key_has_a_range_and_an_invalid_case():
    numeric = set(numeric_keys())
    assert len(numeric) > 40
    assert set(RANGES) == numeric
    assert set(INVALID) == numeric


@pytest.mark.parametrize("key", sorted(INVALID))
def test_invalid_value_is_one_line_naming_key_and_range(key):
    value, words = INVALID[key]
    with pytest.raises(UsageError) as err:
        load_config(["recipe=mocov3", f"{key}={value}"])
    message = str(err.value)
    assert message.startswith(f"{key}: ") and words in message and "\n" not in message, message


@pytest.mark.parametrize("key", ["method.temperature", "train.lr", "data.cache_gb", "bf.dropout"])
def test_non_finite_floats_are_out_of_range(key):
    for value in (".nan", ".inf"):
        with pytest.raises(UsageError, match=key):
            load_config(["recipe=mocov3", f"{key}={value}"])


def test_range_edges_hand_checked():
    half_open = Range(0, 1, high_open=True)
    assert half_open.admits(0) and half_open.admits(0.999) and not half_open.admits(1)
    assert not Range(0, low_open=True).admits(0) and Range(0, low_open=True).admits(1e-12)
    assert Range(1).admits(1) and not Range(1).admits(0)
    assert Range(0, 4, low_open=True).describe() == "in (0, 4]"


def test_valid_edges_are_accepted():
    cfg = load_config(["recipe=mocov2", "method.momentum=1.0", "bf.dropout=0", "data.num_workers=0",
                       "train.checkpoint_every=0", "knn.every=0", "model.width=4"])
    assert cfg.method.momentum == 1.0 and cfg.model.width == 4.0


@pytest.mark.parametrize("args, fragment", [
    (["recipe=mocov3_bf", "bf.heads=3"], "bf.heads: 3 heads do not divide the width the layer "
                                         "attends over (256, method.proj_out"),
    (["recipe=mocov3_bf_authors", "model.width=0.25", "bf.heads=3"],
     "(128, the backbone's features"),
])
def test_cross_key_checks(args, fragment):
    with pytest.raises(UsageError) as err:
        load_config(args)
    assert fragment in str(err.value)
