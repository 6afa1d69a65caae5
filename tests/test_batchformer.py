"""BatchFormer: attention across the batch, checked against a hand-written layer."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssl_bf.models.batchformer import BatchFormer


def naive_post_norm_layer(layer, x, mask_self):
    """One TransformerEncoderLayer (post-norm, ReLU) over the sequence x (B, d), by hand."""
    d = x.shape[1]
    heads = layer.self_attn.num_heads
    w_q, w_k, w_v = layer.self_attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = layer.self_attn.in_proj_bias.chunk(3)
    q, k, v = x @ w_q.T + b_q, x @ w_k.T + b_k, x @ w_v.T + b_v
    hd = d // heads
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        scores = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
        if mask_self:
            scores = scores - torch.eye(x.shape[0]) * 1e9
        outs.append(torch.softmax(scores, dim=1) @ v[:, sl])
    attn = (torch.cat(outs, dim=1) @ layer.self_attn.out_proj.weight.T
            + layer.self_attn.out_proj.bias)
    h1 = F.layer_norm(x + attn, (d,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
    ff = (F.relu(h1 @ layer.linear1.weight.T + layer.linear1.bias) @ layer.linear2.weight.T
          + layer.linear2.bias)
    return F.layer_norm(h1 + ff, (d,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)


def test_matches_a_hand_written_layer_over_the_batch():
    torch.manual_seed(0)
    for mask_self in (False, True):
        bf = BatchFormer(8, heads=4, dropout=0.5, mask_self=mask_self).eval()
        x = torch.randn(5, 8)
        expected = naive_post_norm_layer(bf.encoder.layers[0], x, mask_self)
        assert torch.allclose(bf(x), expected, atol=1e-5), mask_self


def test_each_output_depends_on_the_other_samples():
    torch.manual_seed(1)
    bf = BatchFormer(8, dropout=0.0).eval()
    x = torch.randn(4, 8)
    y = x.clone()
    y[3] += 1.0
    out_x, out_y = bf(x), bf(y)
    assert not torch.allclose(out_x[0], out_y[0])  # sample 0 sees sample 3
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(bf(x[perm]), out_x[perm], atol=1e-5)  # no positional encoding


def test_defaults_are_the_authors_layer():
    bf = BatchFormer(16)
    layer = bf.encoder.layers[0]
    assert layer.self_attn.num_heads == 4
    assert layer.linear1.out_features == 16  # dim_feedforward = d
    assert layer.dropout.p == 0.5 and not layer.norm_first


def test_gated_batchformer_starts_at_its_gate():
    torch.manual_seed(2)
    x = torch.randn(6, 8)
    closed = BatchFormer(8, dropout=0.0, gate_init=0.0).eval()
    assert torch.equal(closed(x), x)  # g = 0: the BF stream is the plain stream
    half = BatchFormer(8, dropout=0.0, gate_init=0.5).eval()
    plain = half.encoder(x.unsqueeze(0)).squeeze(0)
    assert torch.allclose(half(x), 0.5 * x + 0.5 * plain, atol=1e-6)
    half(x).sum().backward()
    assert half.gate.grad is not None and half.gate.grad.abs().sum() > 0


def test_stop_mates_grad_keeps_values_and_leaves_only_each_samples_own_gradient():
    # Reference: the plain layer's full Jacobian d out_i / d x_j (B, d, B, d). With
    # the mates' gradient stopped it must be exactly its block diagonal (j == i).
    torch.manual_seed(3)
    x = torch.randn(5, 8, dtype=torch.float64)
    eye = torch.eye(5, dtype=torch.float64)[:, None, :, None]
    for norm_first, mask_self, layers in ((False, False, 1), (True, True, 2), (False, True, 1)):
        plain = BatchFormer(8, layers=layers, dropout=0.0, norm_first=norm_first,
                            mask_self=mask_self).double().eval()
        ours = BatchFormer(8, layers=layers, dropout=0.0, norm_first=norm_first,
                           mask_self=mask_self, stop_mates_grad=True).double().eval()
        ours.load_state_dict(plain.state_dict())
        assert torch.allclose(ours(x), plain(x), atol=1e-10)
        full = torch.autograd.functional.jacobian(plain, x)
        own = torch.autograd.functional.jacobian(ours, x)
        if layers == 1:
            assert torch.allclose(own, full * eye, atol=1e-10), (norm_first, mask_self)
        else:  # layer 2 sees layer 1's mixed outputs as constants: still no cross-sample terms
            assert torch.count_nonzero(own * (1 - eye)) == 0
        assert (full * (1 - eye)).abs().max() > 1e-3  # the plain layer does mix gradients
        if layers == 1:  # only the features' paths are cut: the layer's own gradients are equal
            plain(x).sin().sum().backward()
            ours(x).sin().sum().backward()
            for (name, a), b in zip(plain.named_parameters(), ours.parameters()):
                assert torch.allclose(a.grad, b.grad, atol=1e-10), name


def test_stop_mates_grad_trains_the_layer_and_matches_it_in_training_mode():
    torch.manual_seed(4)
    plain = BatchFormer(8, dropout=0.0, gate_init=0.3).train()
    ours = BatchFormer(8, dropout=0.0, gate_init=0.3, stop_mates_grad=True).train()
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(6, 8)
    assert torch.allclose(ours(x), plain(x), atol=1e-5)
    ours(x).pow(2).sum().backward()
    grads = [p.grad for p in ours.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
