"""MoCo-v2/v3 with and without BatchFormer: what trains, what is shared, what is exported."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ssl_bf.config import load_config
from ssl_bf.methods import build_method
from ssl_bf.methods.losses import info_nce_queue, mocov3_contrastive
from ssl_bf.rundir.export import backbone_metadata
from ssl_bf.training.optim import build_optimizer, set_lr

SMALL = ["model.width=0.25", "method.proj_hidden=64", "method.pred_hidden=64",
         "method.queue_size=64", "train.batch_size=16", "method.bn_splits=2"]


def make(name: str, *extra: str, seed: int = 0):
    cfg = load_config([f"recipe={name}", *SMALL, *extra])
    torch.manual_seed(seed)
    return cfg, build_method(cfg)


def views(seed: int = 0, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randn(n, 3, 32, 32, generator=g)


def test_eval_backbone_is_batch_invariant():
    _, method = make("mocov3_bf")
    backbone = method.backbone.eval()
    x1, _ = views()
    with torch.no_grad():
        together = backbone(x1)
        alone = torch.cat([backbone(x1[i:i + 1]) for i in range(4)])
    assert torch.allclose(together[:4], alone, atol=1e-5)


def test_bf_parameters_get_gradients_and_change_after_a_step():
    for recipe in ("mocov2_bf", "mocov3_bf"):
        cfg, method = make(recipe)
        opt = build_optimizer(cfg, method)
        set_lr(opt, 0.1)
        before = copy.deepcopy(method.query.bf.state_dict())
        out = method(views())
        out.loss.backward()
        grads = [p.grad for p in method.query.bf.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), recipe
        opt.step()
        after = method.query.bf.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before), recipe


def test_fixed_random_bf_gets_no_gradient_and_is_not_optimised():
    cfg, method = make("mocov3_bf", "bf.trainable=false")
    opt = build_optimizer(cfg, method)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in method.query.bf.parameters())
    method(views()).loss.backward()
    assert all(p.grad is None for p in method.query.bf.parameters())


def test_bf_never_in_key_encoder_or_export():
    _, method = make("mocov2_bf")
    key_names = [n for n, _ in method.key.named_parameters()]
    assert key_names and not any("bf" in n for n in key_names)
    assert not any(p.requires_grad for p in method.key.parameters())
    exported = method.backbone.state_dict()
    assert not any("bf" in k or "encoder" in k for k in exported)
    assert backbone_metadata(load_config(["recipe=mocov2_bf"]).model, 32)["backbone"] == "resnet18"
    bf_before = copy.deepcopy(method.query.bf.state_dict())
    method.update_key_encoder(0.5)
    assert all(torch.equal(v, method.query.bf.state_dict()[k]) for k, v in bf_before.items())


def test_disabled_bf_is_exactly_the_plain_method():
    for name in ("mocov2", "mocov3"):
        _, plain = make(name)
        _, off = make(f"{name}_bf", "bf.enabled=false", "bf.dropout=0.1")
        assert off.query.bf is None
        off.load_state_dict(plain.state_dict())
        torch.manual_seed(5)
        a = plain(views()).loss
        torch.manual_seed(5)
        b = off(views()).loss
        assert torch.equal(a, b), name


def test_mocov2_plain_stream_is_unchanged_by_a_post_projector_bf():
    _, plain = make("mocov2")
    cfg, with_bf = make("mocov2_bf")
    missing, unexpected = with_bf.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("query.bf.") for k in missing)
    torch.manual_seed(3)
    a = plain(views())
    torch.manual_seed(3)
    b = with_bf(views())
    assert torch.allclose(a.loss_plain, b.loss_plain, atol=1e-6)
    w = cfg.bf.loss_weight  # DESIGN: loss = (L_plain + w L_bf) / (1 + w)
    expected = (float(b.loss_plain) + w * float(b.loss_bf)) / (1 + w)
    assert b.loss_bf is not None and abs(float(b.loss.detach()) - expected) < 1e-5


def test_mocov3_loss_is_the_naive_composition():
    cfg, m = make("mocov3", "bf.enabled=false")
    x1, x2 = views()
    out = m([x1, x2])
    q1 = m.query.predictor(m.query.projector(m.query.backbone(x1)))
    q2 = m.query.predictor(m.query.projector(m.query.backbone(x2)))
    with torch.no_grad():
        k1 = F.normalize(m.key.projector(m.key.backbone(x1)), dim=1)
        k2 = F.normalize(m.key.projector(m.key.backbone(x2)), dim=1)
    t = cfg.method.temperature
    expected = mocov3_contrastive(q1, k2, 0, t) + mocov3_contrastive(q2, k1, 0, t)
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_mocov2_enqueues_keys_and_scores_against_the_old_queue():
    cfg, m = make("mocov2", "method.bn_splits=1")
    x1, x2 = views()
    old = m.queue.keys.clone()
    out = m([x1, x2])
    with torch.no_grad():
        k2 = F.normalize(m.key.projector(m.key.backbone(x2)), dim=1)
    q = F.normalize(m.query.projector(m.query.backbone(x1)), dim=1)
    expected = info_nce_queue(q, k2, old, cfg.method.temperature)
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert torch.allclose(m.queue.keys[:16], k2, atol=1e-6) and int(m.queue.ptr) == 16


def test_detached_bf_stream_does_not_reach_the_backbone():
    # MoCo-v2's head has no BatchNorm; in MoCo-v3 the shared predictor's BN
    # statistics still couple the two streams, by design (one pass over both).
    _, m = make("mocov2_bf", "bf.detach=true")
    x1, _ = views()
    plain, bf_stream = m.query(x1)
    bf_stream.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.query.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.query.bf.parameters())


def test_pre_projector_bf_runs_before_the_shared_projector():
    _, m = make("mocov2_bf", "bf.position=pre_projector")
    assert m.query.bf.encoder.layers[0].linear1.in_features == m.backbone.dim
    plain, bf_stream = m.query(views()[0])
    assert plain.shape == bf_stream.shape == (16, 128)


def test_mocov3_heads_have_no_bias_as_the_official_mlps():
    # facebookresearch/moco-v3 builder.py _build_mlp: nn.Linear(dim1, dim2, bias=False) throughout
    _, m = make("mocov3")
    linears = [mod for part in (m.query.projector, m.query.predictor) for mod in part.modules()
               if isinstance(mod, torch.nn.Linear)]
    assert len(linears) == 4 and all(lin.bias is None for lin in linears)


def test_mocov2_head_hidden_width_follows_the_backbone_unless_set():
    # facebookresearch/moco builder.py L37-40: hidden = dim_mlp = the backbone's feature dim
    for extra, hidden in ((["model.width=1.0"], 512), (["model.width=0.25"], 128),
                          (["model.width=0.25", "method.proj_hidden=2048"], 2048)):
        cfg = load_config(["recipe=mocov2", *extra])
        m = build_method(cfg)
        first = next(mod for mod in m.query.projector.modules() if isinstance(mod, torch.nn.Linear))
        assert (first.in_features, first.out_features) == (m.backbone.dim, hidden), extra


def test_lars_exempts_every_one_dimensional_tensor_batchformer_included():
    # facebookresearch/moco-v3 moco/optimizer.py: weight decay and the trust ratio only where
    # p.ndim > 1; every other tensor takes a plain momentum step, p -= lr * mu, mu = grad at first.
    cfg, m = make("mocov3_bf")
    opt = build_optimizer(cfg, m)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all((id(p) in decayed) == (p.ndim > 1) for p in m.parameters() if p.requires_grad)
    lr = 0.5
    set_lr(opt, lr)
    m(views()).loss.backward()
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in m.named_parameters()
              if p.grad is not None}
    opt.step()
    bf_1d = [n for n, p in m.named_parameters() if n.startswith("query.bf.") and p.ndim == 1]
    assert len(bf_1d) >= 6  # in_proj/out_proj/linear biases and both LayerNorms
    for name, p in m.named_parameters():
        if name in before and p.ndim == 1:
            old, grad = before[name]
            assert torch.allclose(p.detach(), old - lr * grad, atol=1e-7), name
    w = dict(m.named_parameters())["query.bf.encoder.layers.0.linear1.weight"]
    old, grad = before["query.bf.encoder.layers.0.linear1.weight"]
    assert not torch.allclose(w.detach(), old - lr * grad, atol=1e-6)  # 2-D: trust ratio applies
