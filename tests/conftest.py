"""Shared fixtures: small real CIFAR-10 trees, written from the CIFAR-10 pack beside the
repository when there is one (the project's CI machines have it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CIFAR_PACK = REPO.parent / "shared" / "data" / "cifar10"


def write_cifar(out: Path, per_class_train: int, per_class_test: int) -> Path:
    script = CIFAR_PACK / "make_imagefolder.py"
    if not script.is_file():
        pytest.skip(f"CIFAR-10 pack not found at {CIFAR_PACK}")
    subprocess.run([sys.executable, str(script), str(out), "--per-class-train", str(per_class_train),
                    "--per-class-test", str(per_class_test)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """Real CIFAR-10 images: 200 train (20 per class), 100 test (10 per class)."""
    return write_cifar(tmp_path_factory.mktemp("cifar10"), 20, 10)


@pytest.fixture(scope="session")
def cifar_root_large(tmp_path_factory) -> Path:
    """Real CIFAR-10 images: 1,000 train (100 per class), 500 test (50 per class)."""
    return write_cifar(tmp_path_factory.mktemp("cifar10_large"), 100, 50)
