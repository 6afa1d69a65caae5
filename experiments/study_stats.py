"""Paired tests for the study's comparisons: a variant against its baseline, paired by seed.

Each seed fixes the data order, augmentations and initial weights of both runs, so the per-seed
difference removes most of the seed-to-seed spread; the question is whether the mean of those
differences is zero. Two-sided paired t test (Student 1908; any statistics text), a 95%
interval of the mean difference, Holm's step-down correction for a family of tests (Holm 1979,
Scand. J. Statist. 6:65-70), and the power of the test from the noncentral t distribution, from
which the smallest difference a test detects at 80% power.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import optimize, stats

POWER = 0.8  # the conventional target (Cohen 1988) that the study's seed plan uses


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float
    sd: float
    t: float
    p: float
    lo: float  # 95% interval of the mean difference
    hi: float


def paired_test(deltas: list[float], level: float = 0.95) -> Paired:
    """The paired t test on per-seed differences (needs two or more)."""
    n = len(deltas)
    if n < 2:
        raise ValueError(f"a paired test needs two or more differences, got {n}")
    mean, sd = statistics.fmean(deltas), statistics.stdev(deltas)
    se = sd / math.sqrt(n)
    t = mean / se if se > 0 else math.copysign(math.inf, mean) if mean else 0.0
    p = 2 * stats.t.sf(abs(t), n - 1) if math.isfinite(t) else 0.0
    half = stats.t.ppf(0.5 + level / 2, n - 1) * se
    return Paired(n, mean, sd, t, float(p), mean - half, mean + half)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p values, in the input's order: the k-th smallest (from 0) is multiplied by
    (m - k), and each adjusted value is at least the one before it in that order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def power(n: int, sd: float, delta: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test with n pairs to detect a true mean difference delta
    when the differences have standard deviation sd."""
    df, shift = n - 1, delta * math.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    lower = stats.nct.cdf(-crit, df, shift)  # the wrong-sign tail; NaN (=0) far out
    return float(stats.nct.sf(crit, df, shift) + (0.0 if math.isnan(lower) else lower))


def detectable(n: int, sd: float, alpha: float = 0.05, target: float = POWER) -> float:
    """The smallest true difference the test finds with probability `target`."""
    if sd <= 0:
        return 0.0
    return float(optimize.brentq(lambda d: power(n, sd, d, alpha) - target, 1e-6 * sd, 100 * sd))


def seeds_needed(sd: float, delta: float, alpha: float = 0.05, target: float = POWER) -> int:
    """The fewest pairs for which the test finds a true difference delta with probability target."""
    return next(n for n in range(2, 10_000) if power(n, sd, delta, alpha) >= target)
