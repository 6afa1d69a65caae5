"""What a method is, for the engine, the optimizer, the checkpoints and the evaluators.

A method is an nn.Module that takes a list of views of one batch and returns a StepOutput;
it owns its key encoder (updated by `update_key_encoder` after each optimizer step), says what
loss a collapsed encoder would reach (`chance_loss`), names the module whose weights are kept
(`backbone`, found in its state dict under BACKBONE_PREFIX) and sorts its trainable parameters
by role (`param_roles`), which the optimizer's groups are made from. docs/design.md, "Adding
a method", has the rules; tests/test_method_contract.py checks every registered method.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple, Sequence

import torch
from torch import nn

from ssl_bf.config.schema import BatchFormerConfig
from ssl_bf.methods.losses import compose_streams

ROLES = ("encoder", "batchformer")  # batchformer: bf.lr_scale applies


class StepOutput(NamedTuple):
    """One forward pass. A NamedTuple so that DDP, accelerate and torch.compile see its
    tensors (they traverse tuples)."""
    loss: torch.Tensor  # what backward runs on
    loss_plain: torch.Tensor  # detached: the plain queries against the plain keys
    loss_bf: torch.Tensor | None  # detached: the BatchFormer queries' loss; None without them
    embedding: torch.Tensor  # detached, L2-normalised plain queries of the first view (spread)
    keys: torch.Tensor | None = None  # the plain keys a queue takes this step (MoCo-v2)


def step_output(losses: list[list[torch.Tensor]], bf: BatchFormerConfig, embedding: torch.Tensor,
                keys: torch.Tensor | None = None) -> StepOutput:
    """losses[s][t]: query stream s (0 plain, 1 BatchFormer) against key stream t. `loss_bf`
    averages the BatchFormer queries' loss over the key streams."""
    loss_bf = (sum(losses[1]) / len(losses[1])).detach() if len(losses) > 1 else None
    return StepOutput(compose_streams(losses, bf.loss, bf.loss_weight), losses[0][0].detach(),
                      loss_bf, embedding, keys)


class Method(nn.Module, ABC):
    """The contract; MoCoV2 and MoCoV3 implement it."""

    BACKBONE_PREFIX = "query.backbone."  # where `backbone` sits in the state dict
    n_views = 2  # how many views of each image forward takes

    @property
    @abstractmethod
    def backbone(self) -> nn.Module:
        """The network pretraining is for: exported, evaluated, kept."""

    @property
    @abstractmethod
    def batchformer(self) -> nn.Module | None:
        """The BatchFormer layer(s), or None: their parameters take the batchformer role."""

    @abstractmethod
    def forward(self, views: Sequence[torch.Tensor], bf_on: bool = True) -> StepOutput:
        """`n_views` views (B, 3, S, S) of the same B images; bf_on: the BatchFormer stream
        takes part this step (bf.start_epoch)."""

    @abstractmethod
    def update_key_encoder(self, momentum: float) -> None:
        """The EMA step of the key encoder, after the optimizer's."""

    @abstractmethod
    def chance_loss(self) -> float:
        """The plain loss when every logit is equal: where a collapsed encoder sits."""

    def param_roles(self) -> dict[str, list[nn.Parameter]]:
        """Every trainable parameter once, by role (frozen ones - the key encoder, a fixed
        BatchFormer - are left out)."""
        layer = self.batchformer
        own = {id(p) for p in layer.parameters()} if layer is not None else set()
        roles: dict[str, list[nn.Parameter]] = {role: [] for role in ROLES}
        for p in self.parameters():
            if p.requires_grad:
                roles["batchformer" if id(p) in own else "encoder"].append(p)
        return roles

    def _check_views(self, views: Sequence[torch.Tensor]) -> None:
        if len(views) != self.n_views:
            raise ValueError(f"{type(self).__name__} takes {self.n_views} views, got {len(views)}")
