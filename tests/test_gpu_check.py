"""benchmarks/gpu_check.sh cannot fail on a typo: both parts run here on the CPU with tiny
settings (QUICK=1) on the 300-image fixture; part a with one recipe (the ViT ImageNet one: its own
branch), part b runs the three CIFAR MoCo-v3 recipes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_gpu_check_runs_both_parts_on_cpu(tmp_path, cifar_root):
    out = tmp_path / "out"
    env = {**os.environ, "QUICK": "1", "OUT": str(out), "RUNS": str(tmp_path / "runs"),
           "ROOT": str(cifar_root), "PYTHON": sys.executable,
           "RECIPES": "imagenet_mocov3_vits"}  # part b runs the CIFAR mocov3 recipes
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "all"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    part_a, part_b = (out / "gpu_a.txt").read_text(), (out / "gpu_b.txt").read_text()
    assert "FAILED" not in part_a + part_b, part_a + part_b
    for recipe in ("imagenet_mocov3_vits",):
        assert any(line.startswith(recipe) and "samples/s" in line for line in part_a.splitlines())
    e2e = json.loads((out / "e2e.json").read_text())
    assert set(e2e["medians"]) == {"ssl_bf batched views", "ssl_bf PIL workers",
                                   "lightly example loop"}
    assert part_a.count("200 epochs of 50,000 images") == 3
    assert '"knn_top1"' in part_a and "kNN evaluation wall time" in part_a
    knn = [line for line in part_b.splitlines() if "kNN top-1" in line]
    assert [line.split()[0] for line in knn] == ["mocov3", "mocov3_bf", "mocov3_bf_authors"]
    assert {p.name for p in out.iterdir()} >= {"device.txt", "b_mocov3.jsonl",
                                               "b_mocov3_bf_authors.jsonl"}
    assert len(list(Path(out).iterdir())) <= 8  # the device tool returns at most 8 files
