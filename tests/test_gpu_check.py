"""benchmarks/gpu_check.sh cannot fail on a typo, and runs in one try: both parts run here on
the CPU with tiny settings (QUICK=1) on the 300-image fixture; part a with one recipe (the ViT
ImageNet one: its own branch) after one that fails, part b runs the three CIFAR MoCo-v3
recipes. A stale run folder from an earlier try is cleared, a failing block is reported and
the rest still runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_gpu_check_runs_both_parts_on_cpu(tmp_path, cifar_root):
    out = tmp_path / "out"
    runs = tmp_path / "runs"
    (runs / "a_imagenet_mocov3_vits" / "checkpoints").mkdir(parents=True)  # an earlier try's
    env = {**os.environ, "QUICK": "1", "OUT": str(out), "RUNS": str(runs),
           "ROOT": str(cifar_root), "PYTHON": sys.executable,
           # a recipe that fails first; part b runs the authors' (BatchFormer, both streams)
           "RECIPES": "no_such_recipe imagenet_mocov3_vits", "B_RECIPES": "mocov3_bf_authors"}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "all"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # one block failed
    part_a, part_b = (out / "gpu_a.txt").read_text(), (out / "gpu_b.txt").read_text()
    assert [line for line in part_a.splitlines() if line.startswith("FAILED")] == [
        "FAILED no_such_recipe"], part_a
    assert "FAILED" not in part_b, part_b
    for recipe in ("imagenet_mocov3_vits",):
        assert any(line.startswith(recipe) and "samples/s" in line for line in part_a.splitlines())
    e2e = json.loads((out / "e2e.json").read_text())
    assert set(e2e["medians"]) == {"ssl_bf batched views", "ssl_bf PIL workers",
                                   "lightly example loop"}
    assert part_a.count("200 epochs of 50,000 images") == 3
    assert '"knn_top1"' in part_a and "kNN evaluation wall time" in part_a
    decode = [line for line in part_a.splitlines() if "img/s/core" in line]
    assert decode[0].startswith("decode_jpeg on cpu, 32 a call") and any(
        line.startswith("crop in worker (PIL), 500x375") for line in decode)
    knn = [line for line in part_b.splitlines() if "kNN top-1" in line]
    assert [line.split()[0] for line in knn] == ["mocov3_bf_authors"]
    assert {p.name for p in out.iterdir()} >= {"device.txt", "b_mocov3_bf_authors.jsonl"}
    assert len(list(Path(out).iterdir())) <= 8  # the device tool returns at most 8 files
