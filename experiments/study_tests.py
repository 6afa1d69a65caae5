"""The study's headline comparisons with their tests, from the committed run tables.

Reads results/study_runs.csv and results/study_lt_runs.csv (experiments/study_report.py writes
them), pairs each variant with its baseline by seed, and writes results/study_tests.md: one
row per comparison (n, paired mean ± std, t, p, 95% interval, Holm-adjusted p for the family,
the smallest difference detectable at 80% power) and one sentence per comparison whose words
follow from those numbers, so the prose cannot say more than the data. The family and its
correction are fixed in advance (experiments/README.md, "Power").
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from experiments.markers import splice
from experiments.study_stats import Paired, detectable, holm, paired_test

ALPHA = 0.05  # family-wise


@dataclass(frozen=True)
class Comparison:
    report: str  # which table: study (12 epochs, balanced) or study_lt (CIFAR-10-LT)
    variant: str
    baseline: str
    metric: str  # a column of <report>_runs.csv
    what: str


# The confirmatory family (Holm over all six), planned before the runs.
FAMILY = (
    Comparison("study", "v3_bf", "v3", "knn_end", "`mocov3_bf` vs MoCo-v3, 12 epochs, kNN"),
    Comparison("study", "v3_authors", "v3", "knn_end",
               "the authors' MoCo-v3 design vs MoCo-v3, 12 epochs, kNN"),
    Comparison("study_lt", "lt_v3_bf", "lt_v3", "knn_end",
               "`mocov3_bf` vs MoCo-v3 on CIFAR-10-LT, kNN"),
    Comparison("study_lt", "lt_v3_bf", "lt_v3", "knn_few",
               "`mocov3_bf` vs MoCo-v3 on CIFAR-10-LT, few-class kNN"),
    Comparison("study_lt", "lt_v3_bf", "lt_v3", "linear",
               "`mocov3_bf` vs MoCo-v3 on CIFAR-10-LT, probe"),
    Comparison("study_lt", "lt_v3_bf", "lt_v3", "linear_few",
               "`mocov3_bf` vs MoCo-v3 on CIFAR-10-LT, few-class probe"),
)
# Shown with their uncorrected p only: MoCo-v2 and the authors' design on CIFAR-10-LT.
DESCRIPTIVE = (
    Comparison("study", "v2_bf_w025", "v2", "knn_end", "`mocov2_bf` vs MoCo-v2, kNN"),
    Comparison("study", "v3_authors_trainable", "v3", "knn_end",
               "the authors' MoCo-v3 design, layer trainable, vs MoCo-v3, kNN"),
    Comparison("study_lt", "lt_v3_authors", "lt_v3", "knn_few",
               "the authors' MoCo-v3 design vs MoCo-v3 on CIFAR-10-LT, few-class kNN"),
    Comparison("study_lt", "lt_v2_bf", "lt_v2", "knn_few",
               "`mocov2_bf` vs MoCo-v2 on CIFAR-10-LT, few-class kNN"),
)


def read_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def deltas(rows: list[dict], c: Comparison) -> list[float]:
    """Per seed, in seed order: the variant's value minus its baseline's."""
    def by_seed(name):
        return {int(r["seed"]): float(r[c.metric]) for r in rows
                if r["name"] == name and r.get(c.metric)}
    base, var = by_seed(c.baseline), by_seed(c.variant)
    return [var[s] - base[s] for s in sorted(var) if s in base]


@dataclass(frozen=True)
class Tested:
    comparison: Comparison
    test: Paired
    p_holm: float | None  # None: descriptive, not in the family
    detectable: float  # at 80% power, at the level the comparison is held to


def run_tests(results: Path) -> list[Tested]:
    tables = {name: read_runs(results / f"{name}_runs.csv") for name in ("study", "study_lt")}
    tested = []
    for group, family in ((FAMILY, True), (DESCRIPTIVE, False)):
        found = [(c, deltas(tables[c.report], c)) for c in group]
        found = [(c, paired_test(d)) for c, d in found if len(d) >= 2]
        adjusted = holm([t.p for _, t in found]) if family else [None] * len(found)
        # a family member's smallest detectable difference at Holm's strictest level, alpha / m
        alpha = ALPHA / len(FAMILY) if family else ALPHA
        tested += [Tested(c, t, q, detectable(t.n, t.sd, alpha))
                   for (c, t), q in zip(found, adjusted)]
    return tested


def verdict(x: Tested) -> str:
    """The sentence a comparison's numbers allow: a gain or a loss only where its test (Holm's,
    for a family member) rejects at ALPHA, otherwise the size it could have detected."""
    t, c = x.test, x.comparison
    p = t.p if x.p_holm is None else x.p_holm
    stat = f"paired {t.mean:+.2f} ± {t.sd:.2f} (n = {t.n}, p = {t.p:.3f}"
    stat += "" if x.p_holm is None else f", Holm p = {x.p_holm:.3f}"
    stat += f"; 95% interval {t.lo:+.2f} to {t.hi:+.2f})"
    if p < ALPHA:
        return (f"{c.what}: a {'gain' if t.mean > 0 else 'loss'} of {abs(t.mean):.2f} points, "
                f"{stat}.")
    return f"{c.what}: no difference detectable above {x.detectable:.1f} points, {stat}."


def markdown(tested: list[Tested]) -> str:
    lines = ["| comparison | n | paired mean ± std | t | p | Holm p | 95% interval | "
             "detectable at 80% power |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for x in tested:
        t = x.test
        holm_p = "(descriptive)" if x.p_holm is None else f"{x.p_holm:.3f}"
        lines.append(f"| {x.comparison.what} | {t.n} | {t.mean:+.2f} ± {t.sd:.2f} | {t.t:+.2f} | "
                     f"{t.p:.3f} | {holm_p} | {t.lo:+.2f} to {t.hi:+.2f} | {x.detectable:.2f} |")
    return "\n".join(lines) + "\n"


def sentences(tested: list[Tested]) -> str:
    """A lead that counts the family's rejections, then one line per family member."""
    family = [x for x in tested if x.p_holm is not None]
    found = [x.comparison.what for x in family if x.p_holm < ALPHA]
    lead = (f"**{len(found)} of the {len(family)} planned comparisons "
            f"differ{'s' if len(found) == 1 else ''} "
            f"from plain MoCo-v3 after Holm's correction"
            f"{': ' + '; '.join(found) if found else ''}.**")
    if not found:
        lead = (f"**None of the {len(family)} planned comparisons differs from plain MoCo-v3 "
                "after Holm's correction.**")
    return lead + "\n\n" + "".join(f"- {verdict(x)}\n" for x in family)


def write_tests(results: Path, readmes: list[Path] = ()) -> str:
    """results/study_tests.md (the table, then the family's sentences); a readme holding
    <!-- study_tests_summary --> markers gets the table, one holding <!-- study_verdict_summary -->
    the sentences."""
    tested = run_tests(results)
    table, words = markdown(tested), sentences(tested)
    (results / "study_tests.md").write_text(table + "\n" + words)
    for readme in readmes:
        text = readme.read_text() if readme.is_file() else ""
        if "<!-- study_tests_summary -->" in text:
            splice(readme, "study_tests", table)
        if "<!-- study_verdict_summary -->" in text:
            splice(readme, "study_verdict", words)
    return table + "\n" + words
