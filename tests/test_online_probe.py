"""The online linear probe: a hand-written SGD step as reference, never seen by evaluation
passes, and a backbone that trains bit for bit as without it."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import torch
import torch.nn.functional as F
from conftest import REPO
from safetensors.torch import load_file
from torch import nn

from ssl_bf.config.schema import ProbeConfig
from ssl_bf.training.online_probe import OnlineProbe


def test_update_is_one_sgd_step_on_the_captured_training_features():
    torch.manual_seed(0)
    backbone = nn.Linear(6, 4)
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    probe = OnlineProbe(backbone, 4, labels.numpy(), ProbeConfig(online=True), seed=0, world=1,
                        device=torch.device("cpu"))
    w0, b0 = probe.head.weight.detach().clone(), probe.head.bias.detach().clone()
    x1, x2, x_eval = torch.randn(3, 6), torch.randn(3, 6), torch.randn(5, 6)
    index = torch.tensor([4, 0, 6])
    out = backbone(x1) + backbone(x2)  # two views of one micro-batch, as MoCo-v3 embeds them
    backbone.eval()
    backbone(x_eval)  # an evaluation pass: not a training sample
    with torch.no_grad():
        backbone.train()
        backbone(x_eval)  # nor is anything under no_grad
    assert len(probe.features) == 2
    acc = probe.update([index], lr=0.5)
    # reference: cross-entropy on [f(x1); f(x2)] with labels repeated, one plain SGD step
    feats = torch.cat([backbone(x1), backbone(x2)]).detach()
    y = labels[index].repeat(2)
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    logits = feats @ w.T + b
    F.cross_entropy(logits, y).backward()
    torch.testing.assert_close(probe.head.weight, w0 - 0.5 * w.grad)
    torch.testing.assert_close(probe.head.bias, b0 - 0.5 * b.grad)
    assert math.isclose(float(acc), 100.0 * float((logits.argmax(1) == y).float().mean()),
                        rel_tol=1e-6)
    assert out.grad_fn is not None and backbone.weight.grad is None  # nothing flowed back
    assert probe.top1(feats, y) == round(
        100.0 * float((probe.head(feats).argmax(1) == y).float().mean()), 4)


def pretrain(out, cifar_root, *extra) -> list[dict]:
    done = subprocess.run([sys.executable, "ssl_bf/pretrain.py", "recipe=mocov3_bf",
                           f"data.root={cifar_root}",
                           "train.epochs=2", "train.batch_size=64", "model.width=0.25",
                           "method.proj_hidden=128", "method.pred_hidden=128", "knn.every=1",
                           f"train.output_dir={out}", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_backbone_trains_identically_with_the_probe_and_logs_online_top1(tmp_path, cifar_root):
    off = pretrain(tmp_path / "off", cifar_root)
    on = pretrain(tmp_path / "on", cifar_root, "probe.online=true")
    a, b = (load_file(str(tmp_path / name / "backbone.safetensors")) for name in ("off", "on"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in off if "loss" in r] == [r["loss"] for r in on if "loss" in r]
    knn_on = [r for r in on if "knn_top1" in r]
    assert [r["epoch"] for r in knn_on] == [1, 2]
    assert all(0.0 <= r["online_top1"] <= 100.0 for r in knn_on)
    assert knn_on[-1]["online_top1"] != knn_on[0]["online_top1"]  # the head trained in between
    assert not any("online_top1" in r for r in off)
    assert [r["knn_top1"] for r in off if "knn_top1" in r] == [r["knn_top1"] for r in knn_on]
