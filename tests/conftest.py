"""Shared fixtures: a small real CIFAR-10 tree shipped in tests/fixtures/cifar10.

CIFAR_PACK is the full CIFAR-10 pack the project's CI machines have beside the repository;
only the README quickstart test needs that many images."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CIFAR_PACK = REPO.parent / "shared" / "data" / "cifar10"
FIXTURE = REPO / "tests" / "fixtures" / "cifar10"  # 300 real CIFAR-10 images, see its README


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """Real CIFAR-10 images: 200 train (20 per class), 100 test (10 per class), in a copy
    of the repository's fixture tree (tests may add files to it)."""
    root = tmp_path_factory.mktemp("cifar10") / "cifar10"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("*.md"))
    return root


@pytest.fixture(scope="session")
def run_dir(cifar_root, tmp_path_factory) -> Path:
    """One epoch of MoCo-v3 on the 200 train images (3 steps), the kNN monitor on: a real
    run directory for the evaluators and the report."""
    out = tmp_path_factory.mktemp("trained") / "run"
    done = subprocess.run(
        [sys.executable, "ssl_bf/pretrain.py", "recipe=mocov3", f"data.root={cifar_root}",
         "train.epochs=1", "train.batch_size=64", "model.width=0.25", "method.proj_hidden=256",
         "method.pred_hidden=256", "knn.every=1", f"train.output_dir={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out
