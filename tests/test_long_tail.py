"""Long-tailed pretraining (data.imbalance) and many / medium / few evaluation."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from ssl_bf.config import load_config
from ssl_bf.data.images import long_tail_counts, long_tail_first
from ssl_bf.errors import UsageError
from ssl_bf.evaluation.groups import class_groups, group_top1, per_class_top1


def test_cui_profile_gives_the_published_cifar_lt_sizes():
    # CIFAR-10-LT / CIFAR-100-LT at ratio 100 (Cui et al. 2019; Cao et al. 2019's LDAM code)
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(long_tail_counts(500, 100, 100)) == 10847
    assert long_tail_counts(20, 10, 1) == [20] * 10


def test_long_tail_cut_keeps_each_classes_first_images():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 0, 1, 2, 2, 0])  # class 0: 5, 1: 3, 2: 4 images
    kept = long_tail_first(labels, 4.0)  # n_max 5: 5, floor(5 / 2) = 2, floor(5 / 4) = 1
    assert kept.tolist() == [0, 1, 2, 3, 4, 5, 7, 11]


def test_groups_rank_by_count_ties_by_label():
    lt = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert class_groups(lt) == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
    assert class_groups([10] * 10) == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
    shuffled = [1, 50, 7, 7, 3, 100]  # ranks: 5, 1, then 2 and 3 tie -> by label, 4, 0
    assert class_groups(shuffled) == {"many": [1, 5], "medium": [2, 3], "few": [0, 4]}
    assert [len(g) for g in class_groups(list(range(100))).values()] == [33, 34, 33]


def test_per_class_and_group_top1_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 2, 0])
    assert per_class_top1(pred, labels, 4) == [50.0, 100.0, 50.0, None]
    # counts rank class 2 first, then 0, then 1 (C = 3: one class a group)
    assert group_top1(pred, labels, [5, 1, 9]) == {"many": 50.0, "medium": 50.0, "few": 100.0}


@pytest.mark.parametrize("args, fragment", [
    (["data.imbalance=100", "data.subset=1000"], "data.imbalance and data.subset both cut"),
    (["data.imbalance=0.5"], "data.imbalance: must be at least 1, got 0.5"),
    (["data.imbalance=10", "data.dataset=stl10"], "stl10's pretraining split is unlabelled"),
    (["data.eval_train=all"], "data.eval_train: 'all' is not one of full, pretrain"),
])
def test_imbalance_errors(args, fragment):
    with pytest.raises(UsageError) as err:
        load_config(["recipe=mocov2", *args])
    assert fragment in str(err.value)


def test_lt_recipes_are_one_override_on_their_base():
    for name in ("mocov2", "mocov2_bf", "mocov3", "mocov3_bf", "mocov2_bf_authors",
                 "mocov3_bf_authors"):
        lt, base = load_config([f"recipe=cifar10_lt/{name}"]), load_config([f"recipe={name}"])
        assert lt.data.imbalance == 100 and lt.method == base.method and lt.bf == base.bf


def test_lt_run_reports_groups_and_the_cli_agrees_with_the_monitor(tmp_path, cifar_root):
    out = tmp_path / "lt"
    common = [f"data.root={cifar_root}", "model.width=0.25", "knn.k=[10]", "method.proj_hidden=64"]
    run = subprocess.run([sys.executable, "ssl_bf/pretrain.py", "recipe=mocov2",
                          "data.imbalance=10", "train.batch_size=32", "train.epochs=1",
                          "knn.every=1", "method.bn_splits=4", f"train.output_dir={out}", *common],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    # 20 images a class in the fixture: floor(20 * 10^(-c/9)) = 20, 15, 11, ..., 2
    counts = [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert f"per class: {' '.join(map(str, counts))}" in run.stdout
    assert (out / "config.yaml").read_text().startswith(f"# pretraining on {sum(counts)} images")
    monitor = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert (monitor["class_counts"] == counts
            and set(monitor["knn_top1_groups"]) == {"many", "medium", "few"})
    assert len(monitor["knn_top1_per_class"]) == 10
    cli = subprocess.run([sys.executable, "eval/knn.py", f"checkpoint={out}", *common], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-3000:]
    row = json.loads(cli.stdout.strip().splitlines()[-1])
    for key in ("knn_top1", "knn_top1_groups", "knn_top1_per_class"):
        assert row[key] == monitor[key], key
