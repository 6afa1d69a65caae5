"""The study grid's rows are what their labels say (experiments/study_grid.yaml)."""
from __future__ import annotations

from conftest import REPO

from ssl_bf.config import load_config, yaml_load


def grid() -> dict:
    rows = yaml_load((REPO / "experiments" / "study_grid.yaml").read_text())["variants"]
    return {row["name"]: row for row in rows}


def test_authors_rows_run_the_authors_recipes_bf_section():
    rows = grid()
    for name, recipe, extra in (("v3_authors", "mocov3_bf_authors", []),
                                ("v3_authors_trainable", "mocov3_bf_authors",
                                 ["bf.trainable=true"]),
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
            assert claims == authors_design(cfg), name


def authors_design(cfg) -> bool:
    """The bf section of the method's *_bf_authors recipe (MoCo-v3: the layer frozen as their
    code ran it, or trainable as they meant it); any other change makes it ours."""
    theirs = load_config([f"recipe={cfg.method.name}_bf_authors"]).bf
    as_meant = load_config([f"recipe={cfg.method.name}_bf_authors", "bf.trainable=true"]).bf
    return cfg.bf == theirs or (cfg.method.name == "mocov3" and cfg.bf == as_meant)


def lt_grid() -> dict:
    rows = yaml_load((REPO / "experiments" / "study_lt_grid.yaml").read_text())["variants"]
    return {row["name"]: row for row in rows}


def config(row: dict):
    return load_config([f"recipe={row['recipe']}", *row.get("overrides", [])])


def test_long_tailed_rows_run_the_shipped_and_the_authors_bf_sections():
    rows = lt_grid()
    for name, recipe in (("lt_v2_bf", "mocov2_bf"), ("lt_v3_bf", "mocov3_bf"),
                         ("lt_v3_authors", "mocov3_bf_authors"),
                         ("lt_v2_authors", "mocov2_bf_authors")):
        assert config(rows[name]).bf == load_config([f"recipe={recipe}"]).bf, name
        assert config(rows[name]).method.name == recipe[:6]
    for name, row in rows.items():
        assert ("the authors'" in row["label"]) == authors_design(config(row)), name
        # every row has 3 seeds; the comparison the power plan needs (experiments/README.md,
        # "Power") has 6
        seeds = 6 if name in ("lt_v3", "lt_v3_bf") else 3
        assert row["linear"] and row["seeds"] == list(range(seeds)), name


def test_balanced_control_differs_from_the_long_tailed_baseline_only_in_the_data_cut():
    rows = lt_grid()
    # Cui et al.'s profile at R = 100 on CIFAR-10, by hand: sum of floor(5000 * 100^(-c/9))
    assert sum(int(5000 * 100 ** (-c / 9)) for c in range(10)) == 12406
    for method in ("v2", "v3"):
        lt, bal = config(rows[f"lt_{method}"]), config(rows[f"bal_{method}"])
        assert (lt.data.imbalance, lt.data.subset) == (100, None)
        assert (bal.data.imbalance, bal.data.subset, bal.data.eval_train) == (None, 12406, "full")
        # null = the balanced split under data.imbalance
        assert lt.data.eval_train in (None, "full")
        for section in ("method", "model", "aug", "train", "knn", "linear", "bf"):
            assert getattr(lt, section) == getattr(bal, section), (method, section)
        assert rows[f"lt_{method}"]["baseline"] == f"bal_{method}"


def test_long_tailed_variants_differ_from_their_baseline_only_in_what_they_test():
    rows = lt_grid()
    for name, row in rows.items():
        if not name.startswith("lt_") or row["baseline"].startswith("bal_"):
            continue
        cfg, base = config(row), config(rows[row["baseline"]])
        same = ["model", "data", "aug", "train", "knn", "linear"]
        same += ["bf"] if name == "lt_v2_bnhead" else ["method"]
        if name == "lt_v2_authors":  # their head: one hidden layer more than their plain head
            same.remove("method")
            assert (cfg.method.proj_bn, base.method.proj_bn) == (True, True)
            assert (cfg.method.proj_layers, base.method.proj_layers) == (3, 2)
        for section in same:
            assert getattr(cfg, section) == getattr(base, section), (name, section)
        assert cfg.bf != base.bf or cfg.method != base.method, name


def test_the_lt_grid_probes_every_row_at_its_recipes_lr_also_runs_written_before():
    from experiments import study

    runs = study.load_grid(REPO / "experiments" / "study_lt_grid.yaml")
    for run in runs:
        cmd = study.linear_cmd(REPO / "runs" / "x", run, type("Args", (), {"root": "data/cifar10"}))
        probe = [a for a in cmd if a.startswith("linear.")]
        assert probe == ["linear.lr=0.1"], run["name"]
        # the pin is what the recipes say now: a run written today is probed as its config says
        assert config(run).linear == load_config([f"recipe={run['recipe']}",
                                                  *run.get("overrides", []),
                                                  *probe]).linear, run["name"]


def test_the_full_cifar_rows_differ_only_in_the_shipped_bf_section():
    rows = {r["name"]: r for r in yaml_load(
        (REPO / "experiments" / "study_full_grid.yaml").read_text())["variants"]}
    plain, bf = config(rows["full_v3"]), config(rows["full_v3_bf"])
    assert (plain.data.subset, plain.data.imbalance, plain.train.epochs) == (None, None, 100)
    assert bf.bf == load_config(["recipe=mocov3_bf"]).bf and not plain.bf.enabled
    for section in ("method", "model", "data", "aug", "train", "knn", "linear"):
        assert getattr(plain, section) == getattr(bf, section), section
    assert rows["full_v3"]["seeds"] == rows["full_v3_bf"]["seeds"] == [0]


def test_the_power_plans_rows_share_seeds_with_their_baseline():
    rows = grid()
    for name in ("v3_bf", "v3_authors"):
        assert rows[name]["seeds"] == rows["v3"]["seeds"] == list(range(10)), name
