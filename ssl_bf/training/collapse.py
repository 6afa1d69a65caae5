"""Collapse detection: the warning a BatchFormer prototype here needed and lacked.

Two signs, either is enough when it persists: the L2-normalised query
embeddings stop varying (their per-dimension std, times sqrt(d), falls toward 0;
an isotropic spread on the sphere gives 1), or the loss sits at the value it
takes when every logit is equal - ln(K+1) for the queue loss, its in-batch
equivalent for MoCo-v3 - i.e. the model no longer tells positives apart.
"""
from __future__ import annotations

import math

import torch


def spread(q: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of L2-normalised embeddings (B, d), scaled by sqrt(d): about 1
    for directions spread evenly over the sphere, 0 when every row is the same. A tensor
    (no host sync): the engine averages it between log points."""
    return q.float().std(dim=0).mean() * math.sqrt(q.shape[1])


class CollapseWatch:
    """Feed it (step, spread, loss) at each log point; it says when to warn."""

    def __init__(self, chance_loss: float, total_steps: int, patience: int = 3,
                 min_spread: float = 0.1, loss_tolerance: float = 0.01):
        self.chance, self.patience = chance_loss, patience
        self.min_spread, self.tolerance = min_spread, loss_tolerance
        # Early training may look like anything (MoCo-v2's spread dips while the
        # queue still holds random keys): judge only after 10% of the run or 200 steps.
        self.grace = min(total_steps, max(200, total_steps // 10))
        self.strikes, self.collapsed = 0, False

    def update(self, step: int, spread_value: float, loss: float) -> bool:
        """True while collapse is suspected (after `patience` consecutive bad readings)."""
        at_chance = abs(loss - self.chance) <= self.tolerance * self.chance
        bad = step >= self.grace and (spread_value < self.min_spread or at_chance)
        self.strikes = self.strikes + 1 if bad else 0
        self.collapsed = self.strikes >= self.patience
        return self.collapsed

    def message(self, step: int, spread_value: float, loss: float) -> str:
        return (f"warning: collapse suspected at step {step}: embedding spread {spread_value:.3f} "
                f"(1 = spread out, 0 = collapsed), loss {loss:.4f} vs {self.chance:.4f} when all "
                f"logits are equal")
