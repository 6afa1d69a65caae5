"""Config: overrides, base inheritance, types, and every error path of the contract."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

from ssl_bf.config import load_config, parse_overrides, to_dict
from ssl_bf.config.schema import Config
from ssl_bf.errors import UsageError


def test_overrides_are_typed_and_nested():
    cfg = load_config(["recipe=mocov3", "train.batch_size=64", "knn.k=[5,10]",
                       "data.subset=null", "bf.dropout=0.1", "train.lr=1", "log.with=none"])
    assert cfg.train.batch_size == 64 and isinstance(cfg.train.batch_size, int)
    assert cfg.knn.k == [5, 10]
    assert cfg.data.subset is None
    assert cfg.bf.dropout == 0.1
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int accepted for float
    assert cfg.recipe == "mocov3"
    # YAML 1.2 scalars: `no` stays a string (train.precision), 1e-4 is a float
    cfg = load_config(["recipe=mocov3", "train.precision=no", "train.lr=1e-4", "data.root=on"])
    assert (cfg.train.precision, cfg.train.lr, cfg.data.root) == ("no", 1e-4, "on")


def test_base_inheritance_and_override_order():
    cfg = load_config(["recipe=mocov3_bf"])
    assert cfg.bf.enabled is True  # from mocov3_bf
    assert cfg.method.name == "mocov3" and cfg.train.optimizer == "lars"  # from its base
    assert cfg.train.output_dir == "runs/mocov3_bf"  # the child wins
    cfg = load_config(["recipe=mocov3_bf", "bf.enabled=false"])
    assert cfg.bf.enabled is False  # the command line wins over the recipe


def test_recipe_by_path_and_base_relative(tmp_path):
    (tmp_path / "parent.yaml").write_text("train:\n  epochs: 7\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\ntrain:\n  seed: 3\n")
    cfg = load_config([f"recipe={tmp_path / 'child.yaml'}"])
    assert (cfg.train.epochs, cfg.train.seed) == (7, 3)


def test_every_cifar_recipe_resolves():
    for name in ["mocov2", "mocov2_bf", "mocov3", "mocov3_bf", "imagenet_mocov2_r50",
                 "imagenet_mocov3_r50", "imagenet_mocov3_vits"]:
        cfg = load_config([f"recipe={name}"])
        assert cfg.method.name in ("mocov2", "mocov3")
    assert load_config(["recipe=mocov2"]).bf.enabled is False
    assert load_config(["recipe=mocov2_bf"]).bf.position == "post_projector"


def test_round_trip_through_dict():
    cfg = load_config(["recipe=mocov3_bf", "bf.lr_scale=0.1"])
    again = load_config([], base=to_dict(cfg))
    assert again == cfg
    assert isinstance(again, Config)


@pytest.mark.parametrize("args, expected", [
    (["train.batchsize=3"], "unknown key 'train.batchsize' (did you mean 'train.batch_size'?)"),
    (["model.backbone=resnet19"], "model.backbone: 'resnet19' is not one of"),
    (["train.epochs=ten"], "train.epochs: expected int, got 'ten'"),
    (["train.epochs=1.5"], "train.epochs: expected int"),
    (["bf.enabled=maybe"], "bf.enabled: expected bool"),
    (["knn.k=20"], "knn.k: expected a list of int"),
    (["recipe=mocov4"], "recipe 'mocov4' not found"),
    (["train.epochs"], "argument 'train.epochs' is not key=value"),
    (["train.epochs=0"], "train.epochs: must be at least 1"),
    (["bf.dropout=1.5"], "bf.dropout: must be in [0, 1)"),
    (["train=3"], "train: expected a section of keys"),
    (["recipe=mocov3", "bf.keys=true"], "bf.keys: true needs bf.enabled=true"),
    (["recipe=mocov3_bf", "bf.keys=true"], "bf.loss: 'weighted' scores against the plain keys"),
    (["recipe=mocov3_bf_authors", "bf.loss_weight=0.5"],
     "bf.loss_weight: applies to bf.loss=weighted"),
    (["recipe=mocov3_bf", "bf.loss_weight=-1"], "bf.loss_weight: must be at least 0"),
    (["recipe=mocov3_bf", "bf.loss=pairs"],
     "bf.loss: 'pairs' is not one of weighted, pair_sum, pair_mean"),
])
def test_errors_name_the_key(args, expected):
    with pytest.raises(UsageError) as err:
        load_config(args)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_did_you_mean_for_recipes():
    with pytest.raises(UsageError, match="did you mean 'mocov3'"):
        load_config(["recipe=mocov33"])


def test_parse_overrides_rejects_value_and_section_clash():
    with pytest.raises(UsageError):
        parse_overrides(["a=1", "a.b=2"])


def run_cli(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "ssl_bf/pretrain.py", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, fragment", [
    (["recipe=mocov3", "train.batchsize=3"], "did you mean 'train.batch_size'"),
    (["recipe=nope"], "recipe 'nope' not found"),
    (["recipe=mocov3", "bf.position=middle"], "bf.position"),
    (["recipe=mocov3", "method.momentum=1.5"], "method.momentum: must be in [0, 1], got 1.5"),
    (["recipe=mocov3", "data.root=/nonexistent/cifar"], "/nonexistent/cifar"),
])
def test_cli_exits_2_with_one_error_line(args, fragment):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr
