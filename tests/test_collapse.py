"""CollapseWatch and the embedding spread, on hand-computed cases."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssl_bf.training.collapse import CollapseWatch, spread


def test_spread_is_zero_for_one_direction_and_about_one_on_the_sphere():
    same = F.normalize(torch.ones(64, 16), dim=1)
    assert float(spread(same)) == 0.0
    torch.manual_seed(0)
    even = F.normalize(torch.randn(20000, 32), dim=1)
    assert abs(float(spread(even)) - 1.0) < 0.02
    two = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # std of column 0 is sqrt(2), of column 1 zero
    assert math.isclose(float(spread(two)), (math.sqrt(2) + 0) / 2 * math.sqrt(2), rel_tol=1e-6)


def test_grace_period_patience_and_recovery():
    chance = math.log(4097)
    watch = CollapseWatch(chance, total_steps=5000, patience=3)
    assert watch.grace == 500  # 10% of the run (at least 200 steps)
    assert not watch.update(100, 0.0, chance)  # bad, but inside the grace period
    assert [watch.update(s, 0.05, 5.0) for s in (600, 700, 800)] == [False, False, True]
    assert watch.collapsed
    assert not watch.update(900, 0.5, 5.0)  # a healthy reading clears it
    assert watch.strikes == 0


def test_loss_at_chance_alone_is_enough_within_tolerance():
    chance = 8.318
    watch = CollapseWatch(chance, total_steps=100, patience=2, loss_tolerance=0.01)
    assert watch.grace == 100  # short runs: the whole run (min(total, 200))
    watch = CollapseWatch(chance, total_steps=3000, patience=2, loss_tolerance=0.01)
    assert not watch.update(400, 0.9, chance * 1.009)
    assert watch.update(401, 0.9, chance * 0.991)  # second strike, both within 1%
    assert not watch.update(402, 0.9, chance * 1.02)  # 2% away: healthy
    message = watch.message(401, 0.9, chance)
    assert message.startswith("warning: collapse suspected at step 401") and "8.3180" in message
