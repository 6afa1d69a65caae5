"""The study grid's rows are what their labels say (experiments/study_grid.yaml)."""
from __future__ import annotations

from ssl_bf.config import load_config, yaml_load

from conftest import REPO


def grid() -> dict:
    rows = yaml_load((REPO / "experiments" / "study_grid.yaml").read_text())["variants"]
    return {row["name"]: row for row in rows}


def test_authors_rows_run_the_authors_recipes_bf_section():
    rows = grid()
    for name, recipe, extra in (("v3_authors", "mocov3_bf_authors", []),
                                ("v3_authors_trainable", "mocov3_bf_authors", ["bf.trainable=true"]),
                                ("v2_authors", "mocov2_bf_authors", [])):
        row = rows[name]
        study = load_config([f"recipe={row['recipe']}", *row["overrides"]])
        assert study.bf == load_config([f"recipe={recipe}", *extra]).bf, name
        assert study.method.name == recipe[:6]


def test_every_row_builds_a_valid_config_and_only_authors_rows_claim_the_authors():
    for name, row in grid().items():
        if row.get("kind", "pretrain") == "pretrain":
            cfg = load_config([f"recipe={row['recipe']}", *row.get("overrides", [])])
            claims = "the authors'" in row["label"]
            assert claims == cfg.bf.keys, name  # their design = keys through the shared layer
