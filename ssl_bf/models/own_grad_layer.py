"""A transformer encoder layer over the batch whose gradient reaches each sample only
through its own slot (this project's idea for BatchFormer, `bf.stop_mates_grad`).

Forward values are exactly those of `nn.TransformerEncoderLayer`. In the backward,
output i depends on its batch-mates' features x_j (j != i) only as constants: scores
use W_k stop_grad(x_j) and the mixed values W_v stop_grad(x_j), so the layer's own
weights get the same gradient as in the plain layer. The layer may still learn to use
the batch, but the loss on sample i cannot pull the encoder's features of the other
samples towards whatever makes i's loss low. Built to test whether that route is what
makes a trainable layer hurt MoCo-v2 (experiments/README.md): it is not - with it stopped the
study budget ends at 26.15% kNN, far below the plain layer's 35.73% (row v2_bf_sgmates).

Keeping the self term differentiable costs O(B·d), not O(B²·d): scores and mixed
values are computed against keys/values of the detached features, and the diagonal gets
back its gradient through (k_i - k'_i) and (v_i - v'_i), which are zero in value.
(A first version detached k and v themselves, so the layer's key/value weights learnt only
from the self term; experiments/results/study_extra/ records its run.)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _own_grad_attention(attn: nn.MultiheadAttention, x: torch.Tensor,
                        mask: torch.Tensor | None, training: bool) -> torch.Tensor:
    b, d = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    # The mates' keys/values from their features with the gradient stopped, but through the
    # layer's own projections: the layer still learns how to use the batch (only the
    # encoder's features of the mates are constants). Equal in value to k and v.
    w_kv, b_kv = attn.in_proj_weight[d:], attn.in_proj_bias[d:]
    k_sg, v_sg = F.linear(x.detach(), w_kv, b_kv).chunk(2, dim=-1)
    q, k, v, k_sg, v_sg = (t.reshape(b, heads, d // heads).transpose(0, 1)
                           for t in (q, k, v, k_sg, v_sg))  # (H, B, hd)
    scale = 1.0 / math.sqrt(d // heads)
    scores = q @ k_sg.transpose(1, 2)
    scores = scores + torch.diag_embed((q * (k - k_sg)).sum(-1))  # self term keeps its gradient
    scores = scores * scale
    if mask is not None:  # True = may not attend (nn.MultiheadAttention's convention)
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = F.dropout(weights, attn.dropout, training)
    out = weights @ v_sg + weights.diagonal(dim1=1, dim2=2).unsqueeze(-1) * (v - v_sg)
    return attn.out_proj(out.transpose(0, 1).reshape(b, d))


def own_grad_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """`layer` applied to the sequence x (B, d), its own parameters, mates' gradient stopped."""
    def attend(h):
        return layer.dropout1(_own_grad_attention(layer.self_attn, h, mask, layer.training))

    def feed_forward(h):
        return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(h)))))

    if layer.norm_first:
        x = x + attend(layer.norm1(x))
        return x + feed_forward(layer.norm2(x))
    x = layer.norm1(x + attend(x))
    return layer.norm2(x + feed_forward(x))
