"""The authors' BatchFormer-in-MoCo design (recipes *_bf_authors) against a hand-written
reference of their forward (zhihou7/BatchFormer moco-v3/moco/builder.py, builder_v2.py).

The reference is rebuilt here the way their files wire it - their decorator around
`nn.TransformerEncoderLayer` (sequence-first, batch of one), the layer as the first module
of both projectors, their MLPs from `nn.Linear(bias=False)` as in `_build_mlp`, their loss
arithmetic - and given our weights (tensor by tensor, so a tensor of a different shape,
e.g. a bias theirs lacks, fails the copy). The backbones are ours (not under test).
BatchFormer dropout is 0 where values are compared, so both sides are deterministic.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bf.config import load_config
from ssl_bf.methods import build_method
from ssl_bf.training.optim import build_optimizer, set_lr

# their v2 design with the official MoCo-v2 head (their own head: tests/test_authors_v2_head.py)
OFFICIAL_HEAD = ["method.proj_bn=false", "method.proj_layers=2"]
SMALL = ["model.width=0.25", "method.proj_hidden=64", "method.pred_hidden=64",
         "method.queue_size=64", "train.batch_size=16", "method.bn_splits=1"]


def make(recipe: str, *extra: str):
    cfg = load_config([f"recipe={recipe}", *SMALL, *extra])
    torch.manual_seed(0)
    return cfg, build_method(cfg)


def views(seed: int = 0, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randn(n, 3, 32, 32, generator=g)


class TheirDecorator(nn.Module):
    """builder.py TransformerDecorator: in training, cat([x, layer(x as a length-B sequence)]).

    devices > 1: their code on that many GPUs, each running the layer over its own chunk of
    the batch (what one process's split BN stands in for)."""

    def __init__(self, ours: nn.TransformerEncoderLayer, devices: int = 1):
        super().__init__()
        d = ours.linear1.in_features
        self.encoder_layers = nn.TransformerEncoderLayer(d, 4, d, ours.dropout.p)  # sequence-first
        copy_tensors(ours, self.encoder_layers)
        self.devices = devices

    def forward(self, feature):
        out = torch.cat([self.encoder_layers(f.unsqueeze(1)).squeeze(1)
                         for f in feature.chunk(self.devices)])
        return torch.cat([feature, out], dim=0)


def copy_tensors(src: nn.Module, dst: nn.Module) -> None:
    """Parameters and buffers in order; every shape must agree."""
    pairs = list(zip(src.parameters(), dst.parameters())) + list(zip(src.buffers(), dst.buffers()))
    assert len(list(src.parameters())) == len(list(dst.parameters()))
    with torch.no_grad():
        for a, b in pairs:
            assert a.shape == b.shape, (a.shape, b.shape)
            b.copy_(a)


def their_mlp(layers: int, d_in: int, hidden: int, d_out: int, last_bn: bool) -> nn.Sequential:
    """builder.py _build_mlp: Linear(bias=False), BN+ReLU between, affine-free last BN."""
    mods = []
    for i in range(layers):
        a, b = (d_in if i == 0 else hidden), (d_out if i == layers - 1 else hidden)
        mods.append(nn.Linear(a, b, bias=False))
        if i < layers - 1:
            mods += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            mods.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*mods)


def their_ctr(q, k, t):
    """builder.py contrastive_loss on one process."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.einsum("nc,mc->nm", [q, k]) / t
    return nn.CrossEntropyLoss()(logits, torch.arange(q.shape[0])) * (2 * t)


def their_v3(method, cfg, x1, x2):
    """builder.py MoCo_ResNet forward with add_bf=1: returns the loss and their modules."""
    m = method
    layer = TheirDecorator(m.query.bf.encoder.layers[0])
    d, h, out = m.backbone.dim, cfg.method.proj_hidden, cfg.method.proj_out
    proj_q, proj_k = their_mlp(2, d, h, out, True), their_mlp(2, d, h, out, True)
    pred = their_mlp(2, out, cfg.method.pred_hidden, out, False)
    copy_tensors(m.query.projector, proj_q)
    copy_tensors(m.key.projector, proj_k)
    copy_tensors(m.query.predictor, pred)
    base_fc, momentum_fc = nn.Sequential(layer, proj_q), nn.Sequential(layer, proj_k)
    backbone, key_backbone = copy.deepcopy(m.query.backbone), copy.deepcopy(m.key.backbone)
    q1 = pred(base_fc(backbone(x1)))
    q2 = pred(base_fc(backbone(x2)))
    with torch.no_grad():
        k1, k2 = momentum_fc(key_backbone(x1)), momentum_fc(key_backbone(x2))
    n, t = len(q1) // 2, cfg.method.temperature
    loss = (their_ctr(q1[:n], k2[:n], t) + their_ctr(q1[:n], k2[n:], t)
            + their_ctr(q1[n:], k2[:n], t) + their_ctr(q1[n:], k2[n:], t)
            + their_ctr(q2[:n], k1[:n], t) + their_ctr(q2[:n], k1[n:], t)
            + their_ctr(q2[n:], k1[:n], t) + their_ctr(q2[n:], k1[n:], t))
    return loss, {"backbone": backbone, "projector": proj_q, "predictor": pred, "bf": layer}


def grads(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def assert_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4):
    assert a.shape == b.shape and a.abs().max() > 0
    assert (a - b).abs().max() <= rel * a.abs().max() + 1e-7, (a - b).abs().max()


@pytest.mark.parametrize("trainable", [False, True])
def test_mocov3_authors_equals_their_forward_loss_and_gradients(trainable):
    cfg, m = make("mocov3_bf_authors", "bf.dropout=0.0", f"bf.trainable={str(trainable).lower()}")
    x1, x2 = views()
    ref_loss, ref = their_v3(m, cfg, x1, x2)
    ref_loss.backward()
    out = m([x1, x2])
    out.loss.backward()
    assert abs(out.loss.item() - ref_loss.item()) < 1e-5 * ref_loss.item()
    for part in ("backbone", "projector", "predictor"):
        assert_close(grads(getattr(m.query, part)), grads(ref[part]))
    if trainable:
        assert_close(grads(m.query.bf), grads(ref["bf"]))
    else:  # their v3 as run: the layer never gets a gradient
        assert all(p.grad is None for p in m.query.bf.parameters())
    assert all(p.grad is None for p in m.key.parameters())  # keys never get a gradient


def test_mocov3_authors_recipe_layer_is_frozen_trainable_layer_learns():
    for trainable, moves in ((False, False), (True, True)):
        cfg, m = make("mocov3_bf_authors", f"bf.trainable={str(trainable).lower()}")
        opt = build_optimizer(cfg, m)
        set_lr(opt, 0.5)
        before = copy.deepcopy(m.query.bf.state_dict())
        m(views()).loss.backward()
        opt.step()
        changed = any(not torch.equal(v, m.query.bf.state_dict()[k]) for k, v in before.items())
        assert changed == moves
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        assert all((id(p) in in_opt) == trainable for p in m.query.bf.parameters())


def test_authors_layer_is_shared_not_copied_and_never_exported():
    for recipe in ("mocov3_bf_authors", "mocov2_bf_authors"):
        _, m = make(recipe)
        state = m.state_dict()
        assert not any(k.startswith("key.") and "bf" in k for k in state), recipe
        assert any(k.startswith("query.bf.") for k in state)
        assert not any("bf" in k or "encoder" in k for k in m.backbone.state_dict())
        before = copy.deepcopy(m.query.bf.state_dict())
        m.update_key_encoder(0.5)  # the EMA never touches the shared layer
        assert all(torch.equal(v, m.query.bf.state_dict()[k]) for k, v in before.items())


def test_mocov3_authors_keys_have_an_active_dropout_batchformer_stream():
    _, m = make("mocov3_bf_authors")  # dropout 0.5
    x1, _ = views()
    keys = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        keys.append(m._keys(x1, True))
    assert len(keys[0]) == 2 and all(torch.equal(a, b) for a, b in zip(keys[0], keys[1]))
    assert not torch.allclose(keys[0][1], keys[2][1])  # the BF keys: dropout on
    # the key projector's BN runs over both streams, so even the plain keys see the dropout
    assert not torch.allclose(keys[0][0], keys[2][0])
    assert not torch.allclose(keys[0][0], keys[0][1], atol=1e-3)


def their_v2(method, cfg, x1, x2, queue, perm=None, devices=1, bf_queue=None):
    """builder_v2.py forward (constructor call fixed), with the official MoCo-v2 head.

    queue: (K, d) rows (theirs stores the transpose); perm: the key shuffle, or None;
    devices: the GPUs whose per-device layer is imitated (the head has no BatchNorm, so
    only the layer sees the split); bf_queue: the BatchFormer keys' own queue (bf.queue=
    per_stream, ours: a pairing is scored against its key stream's queue). Returns the loss,
    the 2B keys they enqueue, and the query-side modules.
    """
    m = method
    layer = TheirDecorator(m.query.bf.encoder.layers[0], devices)
    encoder_q = nn.Sequential(copy.deepcopy(m.query.backbone), layer,
                              copy.deepcopy(m.query.projector))
    encoder_k = nn.Sequential(copy.deepcopy(m.key.backbone), layer, copy.deepcopy(m.key.projector))
    q = F.normalize(encoder_q(x1), dim=1)
    with torch.no_grad():
        im_k = x2 if perm is None else x2[perm]
        unshuffle = torch.arange(len(x2)) if perm is None else torch.argsort(perm)
        old_k = F.normalize(encoder_k(im_k), dim=1)
        k = old_k[:len(x1)][unshuffle]
        k = torch.cat([k, old_k[len(old_k) // 2:][unshuffle]], dim=0)
    return their_v2_loss(q, k, queue, cfg, bf_queue), k, {
        "backbone": encoder_q[0], "projector": encoder_q[2], "bf": layer}


def their_v2_loss(q, k, queue, cfg, bf_queue=None):
    """builder_v2.py L190-211: 4B rows (query stream x key stream) against the queue."""
    h = len(q) // 2
    l_pos = torch.cat([torch.einsum("nc,nc->n", [a, b]).unsqueeze(-1)
                       for a, b in ((q[:h], k[:h]), (q[:h], k[h:]), (q[h:], k[:h]),
                                    (q[h:], k[h:]))])
    tmp_q = torch.cat([q[:h], q[:h], q[h:], q[h:]], dim=0)
    l_neg = torch.einsum("nc,ck->nk", [tmp_q, queue.T.clone()])
    if bf_queue is not None:  # rows (plain, BF) and (BF, BF) against the BF keys' queue
        for block in (1, 3):
            rows = slice(block * h, (block + 1) * h)
            l_neg[rows] = torch.einsum("nc,ck->nk", [tmp_q[rows], bf_queue.T.clone()])
    logits = torch.cat([l_pos, l_neg], dim=1) / cfg.method.temperature
    return nn.CrossEntropyLoss()(logits, torch.zeros(logits.shape[0], dtype=torch.long))


@pytest.mark.parametrize("splits,scope", [(1, "local"), (2, "local"), (2, "split"), (4, "split")])
def test_mocov2_authors_equals_their_forward_and_enqueues_both_key_streams(splits, scope):
    """scope=split: the layer runs per split-BN group, as their code on `splits` GPUs would;
    the keys' groups are chunks of the shuffled batch, so not their queries' groups."""
    cfg, m = make("mocov2_bf_authors", "bf.dropout=0.0", f"method.bn_splits={splits}",
                  f"bf.scope={scope}", *OFFICIAL_HEAD)
    x1, x2 = views()
    queue = m.queue.keys.clone()
    perm = None
    if splits > 1:  # split BN: the key batch is shuffled before the encoder (and the layer) see it
        torch.manual_seed(11)
        perm = torch.randperm(len(x2))
    devices = splits if scope == "split" else 1
    ref_loss, ref_keys, ref = their_v2(m, cfg, x1, x2, queue, perm, devices)
    ref_loss.backward()
    torch.manual_seed(11)
    out = m([x1, x2])
    out.loss.backward()
    assert abs(out.loss.item() - ref_loss.item()) < 1e-5 * ref_loss.item()
    for part in ("backbone", "projector", "bf"):
        assert_close(grads(getattr(m.query, part)), grads(ref[part]))
    assert all(p.grad is None for p in m.key.parameters())
    assert int(m.queue.ptr) == 32  # 2B keys: plain then BatchFormer
    assert torch.allclose(m.queue.keys[:32], ref_keys, atol=1e-6)
    assert torch.equal(m.queue.keys[32:], queue[32:])


def test_pairing_losses_compose_as_documented():
    cfg, m = make("mocov3_bf_authors", "bf.dropout=0.0", "bf.loss=pair_mean")
    x1, x2 = views()
    summed = make("mocov3_bf_authors", "bf.dropout=0.0")[1]([x1, x2]).loss
    assert abs(m([x1, x2]).loss.item() - summed.item() / 4) < 1e-5


def test_split_scope_attends_within_each_group_and_whole_batch_scope_does_not():
    """A change to one sample reaches the BatchFormer outputs of its own group only (split),
    of the whole batch (local); on MoCo-v3, which has no split BN, split = local."""
    for recipe, scope, groups, reached in (("mocov2_bf_authors", "split", 4, 4),
                                           ("mocov2_bf_authors", "local", 4, 16),
                                           ("mocov3_bf_authors", "split", 1, 16)):
        _, m = make(recipe, "bf.dropout=0.0", "method.bn_splits=4", f"bf.scope={scope}")
        assert m.query.groups == groups
        h = torch.randn(16, m.query.bf.encoder.layers[0].linear1.in_features)
        moved = h.clone()
        moved[5] += 1.0
        changed = (m.query.batchformer(h) - m.query.batchformer(moved)).abs().amax(dim=1) > 1e-6
        assert changed.sum().item() == reached and changed[5]
        if reached == 4:
            assert changed[4:8].all()  # sample 5's group: rows 4..7


def test_mask_self_over_groups_of_one_is_a_usage_error():
    from ssl_bf.config.derived import make_plan
    from ssl_bf.errors import UsageError

    cfg = load_config(["recipe=mocov2_bf_authors", "bf.mask_self=true", "bf.scope=split",
                       "method.bn_splits=8", "train.batch_size=8"])
    with pytest.raises(UsageError, match="bf.mask_self"):
        make_plan(cfg, 1, 100)
    make_plan(load_config(["recipe=mocov2_bf_authors", "bf.mask_self=true", "bf.scope=local",
                           "method.bn_splits=8", "train.batch_size=8"]), 1, 100)


def test_per_stream_queues_score_each_pairing_against_its_key_streams_queue():
    cfg, m = make("mocov2_bf_authors", "bf.dropout=0.0", "method.bn_splits=1",
                  "bf.queue=per_stream")
    x1, x2 = views()
    queue, bf_queue = m.queue.keys.clone(), m.bf_queue.keys.clone()
    assert not torch.allclose(queue, bf_queue)
    ref_loss, ref_keys, ref = their_v2(m, cfg, x1, x2, queue, bf_queue=bf_queue)
    shared_loss, _, _ = their_v2(m, cfg, x1, x2, queue)
    ref_loss.backward()
    out = m([x1, x2])
    out.loss.backward()
    assert abs(out.loss.item() - ref_loss.item()) < 1e-5 * ref_loss.item()
    assert abs(ref_loss.item() - shared_loss.item()) > 1e-3  # the queues do matter
    for part in ("backbone", "projector", "bf"):
        assert_close(grads(getattr(m.query, part)), grads(ref[part]))
    assert int(m.queue.ptr) == 16 and int(m.bf_queue.ptr) == 16  # B keys each
    assert torch.allclose(m.queue.keys[:16], ref_keys[:16], atol=1e-6)
    assert torch.allclose(m.bf_queue.keys[:16], ref_keys[16:], atol=1e-6)
    assert torch.equal(m.queue.keys[16:], queue[16:])


@pytest.mark.parametrize("args,message", [
    (["recipe=mocov2_bf", "bf.queue=per_stream"], "needs bf.keys=true"),
    (["recipe=mocov3_bf_authors", "bf.queue=per_stream"], "mocov3 has none")])
def test_per_stream_queue_without_a_queue_or_key_stream_is_a_usage_error(args, message):
    from ssl_bf.errors import UsageError

    with pytest.raises(UsageError, match=message):
        load_config(args)
