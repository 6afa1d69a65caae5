"""experiments/batch_signature.py: the cosines it reports, on hand-built keys."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from experiments.batch_signature import pairing_stats


def test_pairing_stats_by_hand():
    e = torch.eye(3)
    q = e[:2]                                     # q0 = e0, q1 = e1
    k_same = torch.stack([e[0], F.normalize(e[0] + e[1], dim=0)])
    k_other = torch.stack([e[2], e[2]])
    s = pairing_stats(q, k_same, k_other)
    r = 1 / math.sqrt(2)
    assert math.isclose(s["positive"], (1 + r) / 2, rel_tol=1e-6)   # q0.k0 = 1, q1.k1 = r
    assert math.isclose(s["mates"], (r + 0) / 2, rel_tol=1e-6)      # q0.k1 = r, q1.k0 = 0
    assert s["others"] == 0 and math.isclose(s["signature"], r / 2, rel_tol=1e-6)


def test_a_shared_step_component_shows_as_signature_and_none_without_it():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 32, generator=g)
    step_a, step_b = torch.randn(32, generator=g), torch.randn(32, generator=g)
    q = F.normalize(images + step_a, dim=1)
    leaked = pairing_stats(q, F.normalize(images + step_a, dim=1),
                           F.normalize(torch.randn(64, 32, generator=g) + step_b, dim=1))
    clean = pairing_stats(F.normalize(images, dim=1), F.normalize(images, dim=1),
                          F.normalize(torch.randn(64, 32, generator=g), dim=1))
    assert leaked["signature"] > 0.3 and abs(clean["signature"]) < 0.05
