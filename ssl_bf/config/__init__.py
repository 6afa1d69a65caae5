"""The configuration: the typed schema (schema.py) and recipes + overrides -> a validated
Config (load.py). Light on purpose: a CLI checks its arguments before torch is imported."""
from ssl_bf.config.load import (
    REPO_ROOT,
    all_keys,
    available_recipes,
    flatten,
    load_config,
    parse_overrides,
    read_saved_config,
    save_config,
    to_dict,
    yaml_load,
)
from ssl_bf.config.schema import Config

__all__ = ["Config", "REPO_ROOT", "all_keys", "available_recipes", "flatten", "load_config",
           "parse_overrides", "read_saved_config", "save_config", "to_dict", "yaml_load"]
