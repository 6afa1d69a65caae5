"""Recipes + `key=value` overrides -> a typed, validated :class:`Config`.

    cfg = load_config(["recipe=mocov3_bf", "train.batch_size=128"])

A recipe is YAML; `base: OTHER` starts it from another recipe. Overrides use
dotted keys and YAML scalars/lists as values (`knn.k=[10,20]`, `data.subset=null`).
Everything wrong - unknown key, wrong type, bad choice, missing recipe - raises
UsageError with one line that names the key (and a did-you-mean where one fits),
in the style of nanoGPT's strict configurator.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ssl_bf.config.derived import batchformer_dim, vit_patch_size
from ssl_bf.config.methods import METHODS, traits
from ssl_bf.config.ranges import check_ranges
from ssl_bf.config.schema import Config
from ssl_bf.errors import UsageError, did_you_mean

REPO_ROOT = Path(__file__).resolve().parents[2]


class YamlLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (so `train.precision=no` is the
    string 'no', not False) and `1e-4` is a float (YAML 1.1 wants `1.0e-4`)."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def yaml_load(text: str):
    return yaml.load(text, Loader=YamlLoader)


def recipe_dirs() -> list[Path]:
    """Where `recipe=NAME` is looked up: ./recipes first, then the project's own."""
    dirs = [Path.cwd() / "recipes", REPO_ROOT / "recipes"]
    return list(dict.fromkeys(d.resolve() for d in dirs if d.is_dir()))


def available_recipes() -> list[str]:
    names = set()
    for d in recipe_dirs():
        names.update(p.relative_to(d).with_suffix("").as_posix() for p in d.rglob("*.yaml"))
    return sorted(names)


def find_recipe(name: str) -> Path:
    """A recipe name (`mocov3_bf`, `study/v2`) or a path to a YAML file."""
    direct = Path(name).expanduser()
    if direct.suffix in (".yaml", ".yml") and direct.is_file():
        return direct
    for d in recipe_dirs():
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(d) for d in recipe_dirs()) or "recipes/"
    raise UsageError(f"recipe '{name}' not found (looked in {looked})"
                     f"{did_you_mean(name, available_recipes())}")


def read_recipe(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """The recipe's mapping with its `base:` chain merged in (base first)."""
    path = find_recipe(name)
    key = str(path.resolve())
    if key in _seen:
        raise UsageError(f"recipe '{name}' has a base: cycle")
    try:
        raw = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"recipe {path} must be a mapping of keys to values")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise UsageError(f"recipe {path}: 'base' must be a recipe name")
    base_name = str(path.parent / base) if base.endswith((".yaml", ".yml")) else base
    return deep_merge(read_recipe(base_name, _seen + (key,)), raw)


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = (deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict)
                  else v)
    return out


def parse_overrides(args: list[str]) -> dict:
    """['a.b=1', 'c=[1,2]'] -> {'a': {'b': 1}, 'c': [1, 2]}."""
    tree: dict = {}
    for arg in args:
        key, sep, text = arg.partition("=")
        if not sep or not key:
            raise UsageError(f"argument '{arg}' is not key=value")
        try:
            value = yaml_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise UsageError(f"{key}: cannot parse value '{text}'") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"{key}: '{part}' is set both as a value and as a section")
        node[parts[-1]] = value
    return tree


def load_config(args: list[str], base: dict | None = None) -> Config:
    """Build the Config from CLI arguments (`recipe=NAME` plus overrides).

    `base` (a mapping, e.g. a run's saved config) is applied before the recipe.
    """
    overrides = parse_overrides(args)
    recipe = overrides.pop("recipe", None)
    tree = dict(base or {})
    if recipe is not None:
        if not isinstance(recipe, str):
            raise UsageError("recipe: expected a recipe name or a path to a .yaml file")
        tree = deep_merge(tree, read_recipe(recipe))
        tree["recipe"] = recipe
    tree = deep_merge(tree, overrides)
    return validate(from_dict(tree))


# --- typed conversion -------------------------------------------------------

def _key_name(f: dataclasses.Field) -> str:
    return f.name.rstrip("_")  # `with_` is spelled `with` in files and on the CLI


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + _key_name(f)
        kind = hints[f.name]
        keys.extend(all_keys(kind, name + ".") if dataclasses.is_dataclass(kind) else [name])
    return keys


def from_dict(tree: dict, cls: type = Config, prefix: str = "") -> Any:
    if not isinstance(tree, dict):
        raise UsageError(f"{prefix.rstrip('.') or 'config'}: expected a section of keys")
    hints = typing.get_type_hints(cls)
    fields = {_key_name(f): f for f in dataclasses.fields(cls)}
    for key in tree:
        if key not in fields:
            full = prefix + str(key)
            raise UsageError(f"unknown key '{full}'{did_you_mean(full, all_keys())}")
    values = {}
    for key, value in tree.items():
        f, kind = fields[key], hints[fields[key].name]
        if dataclasses.is_dataclass(kind):
            values[f.name] = from_dict(value, kind, prefix + key + ".")
        else:
            values[f.name] = coerce(value, kind, prefix + key)
    return cls(**values)


def _type_name(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + " or null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    return kind.__name__


def coerce(value: Any, kind: Any, key: str) -> Any:
    """Check (and minimally convert) one value against its declared type."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is Literal:
        if value in args and type(value) is type(args[0]):
            return value
        raise UsageError(f"{key}: '{value}' is not one of {', '.join(map(str, args))}"
                         f"{did_you_mean(str(value), map(str, args))}")
    if origin is list:
        items = value if isinstance(value, list) else None
        if items is None:
            raise UsageError(f"{key}: expected {_type_name(kind)}, got '{value}'")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(items)]
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return os.fspath(str(value))
    raise UsageError(f"{key}: expected {_type_name(kind)}, got '{value}'")


def to_dict(cfg: Any) -> dict:
    """The config as plain data, keys spelled as on the CLI."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[_key_name(f)] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'train': {'lr': 0.3}} -> {'train.lr': 0.3}: the dotted keys of the CLI."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def save_config(cfg: Config, path: str | os.PathLike, header: str = "") -> None:
    """The resolved config as YAML; `header` lines go on top as comments."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    Path(path).write_text(comments + yaml.safe_dump(to_dict(cfg), sort_keys=False))


def read_saved_config(path: str | os.PathLike) -> dict:
    """A run's config.yaml as a mapping (validated when passed to load_config)."""
    try:
        tree = yaml_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None
    if not isinstance(tree, dict):
        raise UsageError(f"{path} is not a config mapping")
    tree.pop("recipe", None)
    return tree


def validate(cfg: Config) -> Config:
    """Every static check of a value: its range (config/ranges.py), then the checks
    across keys that a range alone cannot express."""
    check_ranges(cfg)
    t = cfg.train
    if len(t.betas) != 2:
        raise UsageError(f"train.betas: expected two numbers, got {t.betas}")
    if not cfg.knn.k:
        raise UsageError("knn.k: expected a list of positive integers, got []")
    _validate_model(cfg)
    _validate_bf_streams(cfg.bf)
    method = traits(cfg.method.name)
    if cfg.bf.queue == "per_stream" and not method.queue:
        raise UsageError(f"bf.queue: per_stream is about a queue of keys; {cfg.method.name} "
                         "has none")
    if cfg.method.proj_bn and not method.optional_head_bn:
        takers = " / ".join(t.title for t in METHODS.values() if t.optional_head_bn)
        raise UsageError(f"method.proj_bn: {takers} only ({method.title}'s projector always has "
                         "BatchNorm)")
    _validate_bf_width(cfg)
    _validate_imbalance(cfg.data)
    return cfg


def _validate_model(cfg: Config) -> None:
    m = cfg.model
    if m.backbone.startswith("vit"):
        if m.width != 1.0:
            raise UsageError(f"model.width: only ResNets take a width, not {m.backbone}")
        patch = vit_patch_size(m, cfg.data.image_size)
        if cfg.data.image_size % patch:
            raise UsageError(f"model.patch_size: {patch} does not divide "
                             f"data.image_size={cfg.data.image_size}")


def _validate_bf_width(cfg: Config) -> None:
    if not cfg.bf.enabled:
        return
    dim = batchformer_dim(cfg)
    if dim % cfg.bf.heads:
        where = ("method.proj_out" if cfg.bf.position == "post_projector"
                 else "the backbone's features")
        raise UsageError(f"bf.heads: {cfg.bf.heads} heads do not divide the width the layer "
                         f"attends over ({dim}, {where} at bf.position={cfg.bf.position})")


def _validate_bf_streams(b) -> None:
    """bf.keys / bf.loss / bf.loss_weight: combinations that would be silently ignored."""
    if b.keys and not b.enabled:
        raise UsageError("bf.keys: true needs bf.enabled=true (the keys run the query side's "
                         "layer)")
    if b.keys and b.loss == "weighted":
        raise UsageError("bf.loss: 'weighted' scores against the plain keys only; with "
                         "bf.keys=true use pair_sum (the authors' MoCo-v3) or pair_mean "
                         "(their MoCo-v2)")
    if b.loss != "weighted" and b.loss_weight != 1.0:
        raise UsageError(f"bf.loss_weight: applies to bf.loss=weighted only, got {b.loss_weight} "
                         f"with bf.loss={b.loss}")
    if b.queue == "per_stream" and not b.keys:
        raise UsageError("bf.queue: per_stream needs bf.keys=true (without a BatchFormer key "
                         "stream there is one queue)")


def _validate_imbalance(d) -> None:
    if d.imbalance is None:
        return
    if d.subset is not None:
        raise UsageError("data.imbalance and data.subset both cut the pretraining split; use one "
                         "(data.subset=null with data.imbalance)")
    if d.dataset == "stl10":
        raise UsageError("data.imbalance: stl10's pretraining split is unlabelled, so it cannot "
                         "be cut by class; use cifar10, cifar100 or imagefolder")
