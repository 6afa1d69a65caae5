"""The training step never waits on the GPU between scheduled checks, proven on a CPU: every
recipe's step - forward, loss, backward, optimizer, key-encoder EMA, queue, statistics - runs
on the `meta` device, where anything that reads a value back to the host (`.item()`, a tensor
in an `if`, `nonzero`, `.tolist()`) raises. And fp16's GradScaler: a skipped step leaves the
key encoder alone, and its state survives a checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

from ssl_bf.config import load_config
from ssl_bf.data.pretrain_input import batched_views
from ssl_bf.methods import build_method
from ssl_bf.training.optim import build_optimizer
from ssl_bf.training.runtime import make_accelerator
from ssl_bf.training.state_io import load_scaler, scaler_state
from ssl_bf.training.step import OptimizerStep
from ssl_bf.training.step_stats import StepStats

RECIPES = ["mocov2", "mocov2_bf", "mocov2_bf_authors", "mocov3", "mocov3_bf", "mocov3_bf_authors",
           "imagenet_mocov2_r50", "imagenet_mocov3_r50", "imagenet_mocov3_vits"]


def meta_step(recipe: str, *overrides: str) -> tuple[OptimizerStep, object]:
    small = ["model.vit_depth=2"] if "vits" in recipe else ["model.width=0.125"]
    cfg = load_config([f"recipe={recipe}", *small, "train.batch_size=32", "knn.every=0",
                       *overrides])
    acc = make_accelerator(cfg)
    method = build_method(cfg).to("meta")
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
    stats = StepStats(acc)
    stats.first_bad, stats.sums = stats.first_bad.to("meta"), stats.sums.to("meta")
    trainable = [p for p in method.parameters() if p.requires_grad]
    return OptimizerStep(method, method, acc, build_optimizer(cfg, method), stats, trainable), cfg


def meta_views(cfg, n: int = 32) -> list[torch.Tensor]:
    s = cfg.data.image_size
    layout = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    return [torch.empty(n, 3, s, s, device="meta").contiguous(memory_format=layout)
            for _ in range(2)]


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_step_of_every_recipe_makes_no_host_sync(recipe):
    step, cfg = meta_step(recipe)
    for i in range(2):  # the first makes the momentum buffers, the second uses them
        result = step([meta_views(cfg)], 1, lr=0.1, momentum=0.99, step=i + 1)
        assert result.check is None and result.applied
    assert result.outputs[0].loss.device.type == "meta"


def test_the_harness_catches_a_sync_put_back(monkeypatch):
    step, cfg = meta_step("mocov3_bf")
    record = StepStats.record

    def with_a_read(self, outputs, at, params=None):
        bool(outputs[0].loss > 0)  # a tensor in an `if`: what the step must not do
        return record(self, outputs, at, params)

    monkeypatch.setattr(StepStats, "record", with_a_read)
    with pytest.raises((RuntimeError, NotImplementedError)):
        step([meta_views(cfg)], 1, lr=0.1, momentum=0.99, step=1)


def test_a_scheduled_check_is_the_one_read():
    step, cfg = meta_step("mocov3")
    with pytest.raises((RuntimeError, NotImplementedError)):  # reading meta flags must fail
        step([meta_views(cfg)], 1, lr=0.1, momentum=0.99, step=1, check=True)


def test_batched_views_of_every_cifar_recipe_make_no_host_sync():
    for recipe in ("mocov2", "mocov3"):
        cfg = load_config([f"recipe={recipe}"])
        views = batched_views(cfg)
        images = torch.empty(16, 3, 32, 32, dtype=torch.uint8, device="meta")
        made = views(images, torch.arange(16, device="meta"), 0)
        assert [v.shape for v in made] == [(16, 3, 32, 32)] * 2


# --- fp16's GradScaler -------------------------------------------------------------------

def test_a_step_the_scaler_skips_leaves_the_key_encoder_alone():
    from accelerate.optimizer import AcceleratedOptimizer

    cfg = load_config(["recipe=mocov2", "model.width=0.125", "train.batch_size=16",
                       "method.bn_splits=2"])
    acc = make_accelerator(cfg)
    torch.manual_seed(0)
    method = build_method(cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    scaler.scale(torch.ones(()))  # its scale is made on first use (accelerate's backward)
    optimizer = AcceleratedOptimizer(build_optimizer(cfg, method), scaler=scaler)
    step = OptimizerStep(method, method, acc, optimizer, StepStats(acc), None)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(16, 3, 32, 32, generator=g) for _ in range(2)]
    # the EMA-updated weights (its BatchNorm statistics move in every forward, skipped or not)
    key_before = [t.detach().clone() for t in method.key.parameters()]
    weight = method.backbone.conv1.weight
    hook = weight.register_hook(lambda grad: grad * float("inf"))  # an fp16 overflow
    result = step([views], 1, lr=0.1, momentum=0.9, step=1)
    hook.remove()
    assert not result.applied and scaler.get_scale() == 2.0 ** 7  # skipped, scale backed off
    assert all(torch.equal(a, b) for a, b in zip(key_before, method.key.parameters()))
    result = step([views], 1, lr=0.1, momentum=0.9, step=2)
    assert result.applied
    assert not all(torch.equal(a, b) for a, b in zip(key_before, method.key.parameters()))


def test_the_scaler_state_survives_a_checkpoint():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=3)
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)
    for grad in (float("inf"), 1.0, 1.0):  # one backoff, then two good steps toward growth
        scaler.scale(torch.ones(()))
        p.grad = torch.full((2,), grad) * scaler.get_scale()
        scaler.step(opt)
        scaler.update()
    saved = json.loads(json.dumps(scaler_state(scaler)))  # as trainer_state.json holds it
    fresh = torch.amp.GradScaler("cpu", growth_interval=3)
    load_scaler(fresh, saved)
    assert fresh.get_scale() == scaler.get_scale() == 2.0 ** 15
    assert fresh.state_dict() == scaler.state_dict()  # the growth tracker (2 good steps) too
    assert scaler_state(None) is None


# --- views made on the device, with no host sync ------------------------------------------

def test_masked_views_equal_the_cpus_row_subsets(monkeypatch):
    """Off the CPU every row is computed and a mask selects (no `nonzero`); the values are
    the CPU path's, which computes the selected rows only."""
    from ssl_bf.data import batched_ops

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g)
    for recipe in ("mocov2", "mocov3"):
        views = batched_views(load_config([f"recipe={recipe}"]))
        subset = views(images, torch.arange(24), 3)
        monkeypatch.setattr(batched_ops, "MASKED_ON_CPU", True)
        masked = views(images, torch.arange(24), 3)
        monkeypatch.setattr(batched_ops, "MASKED_ON_CPU", False)
        for a, b in zip(subset, masked):
            assert torch.equal(a, b), recipe


def test_the_counter_rng_on_torch_equals_the_numpy_reference():
    """uniforms() runs where the index is, in int64 with logical shifts; SplitMix64 in
    numpy's uint64, written out here, is the reference."""
    import numpy as np

    from ssl_bf.data.counter_rng import stream_base, uniforms

    gamma = np.uint64(0x9E3779B97F4A7C15)
    m1, m2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)

    def reference(base, index, draws):
        n = index.astype(np.uint64)[:, None] * np.uint64(draws) + np.arange(draws, dtype=np.uint64)
        with np.errstate(over="ignore"):
            z = base + (n + np.uint64(1)) * gamma
            z = (z ^ (z >> np.uint64(30))) * m1
            z = (z ^ (z >> np.uint64(27))) * m2
            z = z ^ (z >> np.uint64(31))
        return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53

    index = np.array([0, 1, 7, 49_999, 1_281_166, 2 ** 40])
    for key in [(0, 0, 0), (5, 3, 1), (123_456_789, 77, 0)]:
        base = stream_base(*key)
        ours = uniforms(base, torch.from_numpy(index), 55).numpy()
        assert np.array_equal(ours, reference(base, index, 55))


# --- train.compile ----------------------------------------------------------------------

def test_a_compiled_step_gives_the_eager_loss():
    """train.compile=true wraps the method in torch.compile: three steps of the compiled
    method give the eager steps' losses. The graph is captured and differentiated as the
    engine's default inductor backend does it, but run by aot_eager, which skips inductor's
    C++ code generation (~2 minutes here; inductor's step time and compile time are measured
    in benchmarks/BENCHMARKS.md, "Host synchronisation and GPU readiness")."""
    cfg = load_config(["recipe=mocov3", "model.width=0.125", "method.proj_hidden=64",
                       "method.pred_hidden=64", "train.batch_size=16", "knn.every=0"])
    acc = make_accelerator(cfg)
    g = torch.Generator().manual_seed(0)
    batches = [[torch.randn(16, 3, 32, 32, generator=g) for _ in range(2)] for _ in range(3)]
    losses = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        method = build_method(cfg)
        model = torch.compile(method, backend="aot_eager") if mode == "compiled" else method
        trainable = [p for p in method.parameters() if p.requires_grad]
        step = OptimizerStep(model, method, acc, build_optimizer(cfg, method), StepStats(acc),
                             trainable)
        losses[mode] = []
        for i, views in enumerate(batches):
            torch.manual_seed(100 + i)
            losses[mode].append(float(step([views], 1, lr=0.1, momentum=0.99, step=i + 1)
                                      .outputs[0].loss.detach()))
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
