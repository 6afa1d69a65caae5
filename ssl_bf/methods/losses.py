"""Contrastive losses as pure functions (no torch.distributed inside).

The caller gathers keys across processes and passes the rank offset, so each
loss can be checked against a naive formula on one CPU. Logits are computed in
float32 whatever the precision: a bf16 softmax over 4k+ logits at T=0.1 loses the
small differences the loss lives on, and autocast would recast `@` to bf16 even on
float32 inputs, so it is switched off inside the losses (the official MoCo-v3 code
keeps its logits in fp16 at best).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F


def full_precision(device: torch.device):
    """Autocast off on `device` (CPU and CUDA autocast; other devices have none)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """MoCo-v1/v2 InfoNCE (He et al. 2020, Eq. 1).

    q, k: (B, d) L2-normalised queries and their positive keys; queue: (K, d)
    L2-normalised negatives. logits = [q.k+, q.queue] / T with label 0.
    Returns the mean loss over the B queries.

    Equal to lightly's NTXentLoss with a memory bank (difference 0, tests/test_losses.py), which
    is not used because that loss owns its bank: it enqueues inside forward, one key set per
    call, and the bank is not part of the model's state. Here the queue is an argument, so one
    snapshot serves every (query stream, key stream) pairing of a step, the caller enqueues
    both key streams of the authors' MoCo-v2 once, and the queue is checkpointed with the model.
    """
    with full_precision(q.device):
        q, k, queue = q.float(), k.float(), queue.float()
        positive = (q * k).sum(dim=1, keepdim=True)
        negatives = q @ queue.T
        logits = torch.cat([positive, negatives], dim=1) / temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)


def mocov3_contrastive(q: torch.Tensor, k_all: torch.Tensor, offset: int,
                       temperature: float) -> torch.Tensor:
    """MoCo-v3 ctr(q, k) (Chen et al. 2021, Alg. 1): CE(q.k_all^T / T, positives) * 2T.

    q: (B, d) this process's queries; k_all: (N, d) keys from every process
    (this process's at rows offset..offset+B); both are L2-normalised here.
    The 2T factor makes the loss scale independent of T, as in the official code.
    """
    with full_precision(q.device):
        q = F.normalize(q.float(), dim=1)
        k_all = F.normalize(k_all.float(), dim=1)
        logits = q @ k_all.T / temperature
        labels = torch.arange(q.shape[0], device=q.device) + offset
        return F.cross_entropy(logits, labels) * (2 * temperature)


def combine_streams(plain: torch.Tensor, bf: torch.Tensor | None, weight: float) -> torch.Tensor:
    """(L_plain + w * L_bf) / (1 + w): the BatchFormer term on the scale of one loss."""
    if bf is None:
        return plain
    return (plain + weight * bf) / (1.0 + weight)


def compose_streams(losses: list[list[torch.Tensor]], mode: str, weight: float) -> torch.Tensor:
    """The training loss from the loss of each (query stream s, key stream t) pairing.

    losses[s][t], s and t in (0 = plain, 1 = BatchFormer). `weighted`: the plain keys
    only, (L[0][0] + w L[1][0]) / (1 + w). `pair_sum`: every pairing summed - the authors'
    MoCo-v3 with --add_bf 1 (zhihou7/BatchFormer moco-v3/moco/builder.py L140-144: 8 terms
    over the two view directions, no division). `pair_mean`: their mean - the authors'
    MoCo-v2 (builder_v2.py L194-210: one cross-entropy over the 4B rows of the four
    pairings, each pairing B rows, so the mean of the four pairing losses).
    """
    if mode == "weighted":
        return combine_streams(losses[0][0], losses[1][0] if len(losses) > 1 else None, weight)
    pairs = [loss for row in losses for loss in row]
    total = torch.stack(pairs).sum()
    return total if mode == "pair_sum" else total / len(pairs)


def chance_loss_queue(queue_size: int) -> float:
    """InfoNCE when every logit is equal: ln(K + 1), the collapse plateau."""
    return math.log(queue_size + 1)


def chance_loss_mocov3(num_keys: int, temperature: float) -> float:
    """Symmetric MoCo-v3 loss with equal logits: 2 terms * ln(N) * 2T."""
    return 2 * math.log(num_keys) * 2 * temperature
