"""Two real processes (gloo on CPU) against one: MoCo's multi-process semantics.

The checks run in tests/dist_checks.py, once with 1 process x 16 samples and
once under `accelerate launch --multi_gpu --num_processes 2` with 2 x 8.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from ssl_bf.rundir.checkpoint import load_checkpoint

LAUNCH2 = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no"]


def run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "tests/dist_checks.py", str(out / "one.pt")])
    run([*LAUNCH2, "tests/dist_checks.py", str(out / "two.pt")])
    one = torch.load(out / "one.pt", weights_only=True)
    two = torch.load(out / "two.pt", weights_only=True)
    assert int(one["world"]) == 1 and int(two["world"]) == 2
    return one, two


def test_mocov3_loss_and_gradients_match_one_process(runs):
    one, two = runs
    assert torch.allclose(one["v3_loss"], two["v3_loss"], atol=1e-6)
    scale = one["v3_grads"].abs().max()
    assert scale > 0 and (one["v3_grads"] - two["v3_grads"]).abs().max() < 1e-5 * scale + 1e-8


def test_authors_mocov3_global_scope_matches_one_process(runs):
    one, two = runs
    assert torch.allclose(one["authors_v3_loss"], two["authors_v3_loss"], atol=1e-6)
    scale = one["authors_v3_grads"].abs().max()
    diff = (one["authors_v3_grads"] - two["authors_v3_grads"]).abs().max()
    assert scale > 0 and diff < 1e-5 * scale + 1e-8


def test_authors_mocov2_enqueues_both_key_streams_of_every_rank(runs):
    _, two = runs
    queues, plain = two["authors_v2_queues"], two["authors_v2_plain_keys"]
    assert torch.equal(queues[0], queues[1]) and int(two["authors_v2_ptr"]) == 32
    # per rank: its 8 plain keys, then its 8 BatchFormer keys (builder_v2.py's order)
    assert torch.allclose(queues[0][0:8], plain[0:8], atol=1e-6)
    assert torch.allclose(queues[0][16:24], plain[8:16], atol=1e-6)
    assert not torch.allclose(queues[0][8:16], plain[0:8], atol=1e-3)


def test_mocov2_queue_is_identical_and_holds_every_ranks_keys(runs):
    _, two = runs
    queues = two["v2_queues"]
    assert torch.equal(queues[0], queues[1])
    assert int(two["v2_ptr"]) == 48 % 40
    # the last step wrote 16 gathered keys at slots 32..39 and (wrapping) 0..7
    written = torch.cat([queues[0][32:40], queues[0][0:8]])
    assert torch.allclose(written, two["v2_last_keys"], atol=1e-6)


def test_shuffle_bn_mixes_ranks_and_restores_order(runs):
    _, two = runs
    seen = two["shuffle_seen"]
    assert sorted(seen.flatten().tolist()) == list(range(16))  # every sample once
    assert any(v >= 8 for v in seen[0].tolist()) and any(v < 8 for v in seen[1].tolist())
    assert torch.allclose(two["shuffle_recovered"], torch.arange(16.0), atol=1e-4)


def test_global_batchformer_equals_one_process_and_crosses_ranks(runs):
    one, two = runs
    assert torch.allclose(two["bf_global_out"], one["bf_global_out"], atol=1e-5)
    assert torch.allclose(two["bf_global_grad"], one["bf_global_grad"], atol=1e-5)
    # local scope attends within each rank only: different outputs and gradients
    assert not torch.allclose(two["bf_local_out"], one["bf_global_out"], atol=1e-3)
    assert not torch.allclose(two["bf_local_grad"], one["bf_global_grad"], atol=1e-3)


def test_parameters_identical_on_both_ranks_after_steps(runs):
    _, two = runs
    assert torch.equal(two["params"][0], two["params"][1])


FAST = ["model.width=0.25", "method.proj_hidden=128", "method.pred_hidden=128",
        "train.batch_size=32", "knn.every=0", "train.log_every=1", "data.subset=96"]


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"]
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("first, second, recipe", [
    ("two", "one", ["recipe=mocov3_bf", "bf.scope=global"]),
    ("one", "two", ["recipe=mocov2", "probe.online=true"]),  # the probe's head crosses too
])
def test_checkpoints_move_between_world_sizes(tmp_path, cifar_root, first, second, recipe):
    out = tmp_path / "run"
    base = ["ssl_bf/pretrain.py", *recipe, f"data.root={cifar_root}", f"train.output_dir={out}",
            *FAST]
    launcher = {"one": [sys.executable], "two": LAUNCH2}
    run([*launcher[first], *base, "train.epochs=1"])
    _, _, state = load_checkpoint(out / "checkpoints" / "last")
    assert (state["step"], state["world_size"]) == (3, 2 if first == "two" else 1)
    run([*launcher[second], *base, "train.epochs=2", "train.resume=auto"])
    _, _, state = load_checkpoint(out / "checkpoints" / "last")
    assert (state["step"], state["epoch"]) == (6, 2)
    assert state["world_size"] == (2 if second == "two" else 1)
    assert steps_logged(out) == [1, 2, 3, 4, 5, 6]
    assert (out / "backbone.safetensors").is_file()
