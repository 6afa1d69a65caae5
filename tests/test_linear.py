"""Linear probe: schedules, a separable problem solved, both modes on real images, frozen check."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState
from torch import nn

from ssl_bf.config import load_config
from ssl_bf.config.schema import LinearConfig
from ssl_bf.evaluation.frozen import BackboneMoved, check_unchanged, snapshot
from ssl_bf.evaluation.job import EvalJob
from ssl_bf.evaluation.linear import linear_probe, probe_lr_at, topk_accuracy, train_head
from ssl_bf.evaluation.splits import labelled_splits, num_classes
from ssl_bf.models.backbones import build_backbone
from ssl_bf.training.runtime import make_accelerator


def test_step_and_cosine_schedules():
    step = LinearConfig(lr=30.0, batch_size=256, schedule="step", milestones=[60, 80], epochs=100)
    assert ([probe_lr_at(step, e) for e in (0, 59, 60, 79, 80, 99)]
            == pytest.approx([30, 30, 3, 3, 0.3, 0.3]))
    cosine = LinearConfig(lr=0.1, batch_size=512, schedule="cosine", epochs=90)  # 0.1 per 256
    assert probe_lr_at(cosine, 0) == pytest.approx(0.2)
    assert probe_lr_at(cosine, 45) == pytest.approx(0.1)
    assert probe_lr_at(cosine, 89) < 0.001


def separable(n: int, seed: int):
    """4 classes in 32-D, each on its own side of a margin: linearly separable."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    feats = torch.randn(n, 32, generator=gen) * 0.5
    feats[torch.arange(n), labels] += 3.0  # class c is large along axis c
    return feats, labels


def test_probe_solves_linearly_separable_features():
    train, train_y = separable(800, 0)
    test, test_y = separable(400, 1)
    cfg = LinearConfig(epochs=20, batch_size=64, lr=0.5, schedule="cosine")
    head = train_head(train, train_y, 4, cfg, seed=0)
    with torch.no_grad():
        top1, top5 = topk_accuracy(head(test), test_y)
        untrained = topk_accuracy(nn.Linear(32, 4)(test), test_y)[0]
    assert top1 >= 99.0 and top5 == 100.0
    assert untrained < 60.0  # the accuracy comes from training


def test_probe_trains_on_augmented_copies():
    train, train_y = separable(800, 2)
    copies = torch.stack([train, train + 0.1 * torch.randn_like(train)])  # (2, N, D)
    test, test_y = separable(400, 3)
    head = train_head(copies, train_y, 4, LinearConfig(epochs=10, batch_size=64, lr=0.5,
                                                       schedule="cosine"), seed=0)
    with torch.no_grad():
        assert topk_accuracy(head(test), test_y)[0] >= 99.0


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    top1, top3 = topk_accuracy(logits, torch.tensor([1, 2, 0]))  # C=3: "top-5" is top-3
    assert top1 == pytest.approx(100 / 3) and top3 == 100.0


class DriftingBackbone(nn.Module):
    """A real bug: BatchNorm statistics updated on every forward, even in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.dim = 8

    def forward(self, x):
        x = F.batch_norm(self.conv(x), self.bn.running_mean, self.bn.running_var,
                         self.bn.weight, self.bn.bias, training=True)
        return x.mean(dim=(2, 3))


@pytest.fixture
def probe_setup(cifar_root):
    AcceleratorState._reset_state(True)
    cfg = load_config([f"data.root={cifar_root}", "data.num_workers=0", "model.width=0.125",
                       "linear.epochs=2", "linear.batch_size=64", "linear.lr=0.1",
                       "linear.schedule=cosine"])
    train, test = labelled_splits(cfg)
    yield cfg, make_accelerator(cfg), train, test, num_classes(train, test)
    AcceleratorState._reset_state(True)


@pytest.mark.parametrize("mode", ["cached", "standard"])
def test_both_modes_on_real_images_leave_the_backbone_alone(probe_setup, mode):
    cfg, acc, train, test, classes = probe_setup
    cfg.linear.mode, cfg.linear.copies = mode, 2
    torch.manual_seed(0)
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    backbone.train()  # as the trainer hands it over: the probe must switch it to eval
    before = snapshot(backbone)
    row = linear_probe(EvalJob(cfg, backbone, acc, classes), train, test)
    assert 0.0 <= row["linear_top1"] <= row["linear_top5"] <= 100.0
    assert row["linear_top5"] > 0.0
    check_unchanged(backbone, before)  # BN running stats included
    assert backbone.training


def test_a_backbone_that_moves_is_caught(probe_setup):
    cfg, acc, train, test, classes = probe_setup
    with pytest.raises(BackboneMoved, match="bn.running_mean"):
        linear_probe(EvalJob(cfg, DriftingBackbone(), acc, classes), train, test)
    backbone = DriftingBackbone()
    before = snapshot(backbone)
    check_unchanged(backbone, before)  # nothing moved yet: no error
    with torch.no_grad():
        backbone.conv.weight[0, 0, 0, 0] += 1e-6
    with pytest.raises(BackboneMoved, match="conv.weight"):
        check_unchanged(backbone, before)
