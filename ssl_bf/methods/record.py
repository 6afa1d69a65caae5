"""What a method's forward returns, written once for MoCo-v2 and MoCo-v3."""
from __future__ import annotations

import torch

from ssl_bf.config.schema import BatchFormerConfig
from ssl_bf.methods.losses import compose_streams


def loss_record(losses: list[list[torch.Tensor]], bf: BatchFormerConfig, **extra) -> dict:
    """losses[s][t]: query stream s against key stream t -> {'loss', 'loss_plain', 'loss_bf', ...}.

    `loss_plain` is the plain queries against the plain keys (what the collapse watch
    compares with chance); `loss_bf` the BatchFormer queries' loss, averaged over the
    key streams (None without a BatchFormer stream).
    """
    loss_bf = None
    if len(losses) > 1:
        loss_bf = (sum(losses[1]) / len(losses[1])).detach()
    return {"loss": compose_streams(losses, bf.loss, bf.loss_weight),
            "loss_plain": losses[0][0].detach(), "loss_bf": loss_bf, **extra}
