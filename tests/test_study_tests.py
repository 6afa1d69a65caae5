"""The study's paired tests (experiments/study_stats.py, study_tests.py): hand-computed cases, a
Monte Carlo check of the power formula, and the README's verdict is the report's."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from conftest import REPO

from experiments.study_stats import detectable, holm, paired_test, power, seeds_needed
from experiments.study_tests import FAMILY, markdown, run_tests, sentences, write_tests


def test_paired_t_by_hand():
    # deltas 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3. With 2 degrees of freedom
    # the t CDF is 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - 2 sqrt3 / sqrt 14.
    t = paired_test([1.0, 2.0, 3.0])
    assert (t.n, t.mean, t.sd) == (3, 2.0, 1.0)
    assert t.t == pytest.approx(2 * math.sqrt(3))
    assert t.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14))
    # 95% interval: t_{0.975, 2} = 4.302653 (any t table) times the standard error 1/sqrt 3
    assert (t.lo, t.hi) == pytest.approx((2 - 4.302653 / math.sqrt(3),
                                          2 + 4.302653 / math.sqrt(3)), abs=1e-5)
    with pytest.raises(ValueError):
        paired_test([0.5])


def test_holm_by_hand():
    # sorted: 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> held at 0.06 (step-down)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_power_is_alpha_at_zero_and_matches_a_simulation():
    assert power(6, 1.0, 0.0, 0.05) == pytest.approx(0.05, abs=1e-9)
    # Monte Carlo: 40,000 experiments of 5 pairs, true difference 1, sd 1; critical t_{0.975,4}
    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 1.0, size=(40_000, 5))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(5))
    simulated = float(np.mean(np.abs(t) > 2.776445))
    assert power(5, 1.0, 1.0, 0.05) == pytest.approx(simulated, abs=0.01)


def test_detectable_and_seeds_needed_invert_power():
    mdd = detectable(3, 0.35)
    assert power(3, 0.35, mdd) == pytest.approx(0.8, abs=1e-6)
    assert mdd == pytest.approx(1.14, abs=0.01)  # the 1.15 for mocov3_bf at 3 seeds
    n = seeds_needed(0.84, 1.0, 0.05 / 6)
    assert power(n, 0.84, 1.0, 0.05 / 6) >= 0.8 > power(n - 1, 0.84, 1.0, 0.05 / 6)
    assert n == 13  # experiments/README.md's plan


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["name", "seed", "knn_end", "knn_few", "linear", "linear_few"])
        writer.writeheader()
        writer.writerows(rows)


def test_words_follow_the_holm_corrected_test(tmp_path):
    # v3_bf gains +1.0, +1.1, +0.9, +1.0 (a clear gain); v3_authors differs by +-1 (nothing)
    base = [{"name": "v3", "seed": s, "knn_end": 40.0} for s in range(4)]
    bf = [{"name": "v3_bf", "seed": s, "knn_end": 40.0 + d}
          for s, d in enumerate((1.0, 1.1, 0.9, 1.0))]
    authors = [{"name": "v3_authors", "seed": s, "knn_end": 40.0 + d}
               for s, d in enumerate((1, -1, 1, -1))]
    write_csv(tmp_path / "study_runs.csv", base + bf + authors)
    tested = run_tests(tmp_path)
    assert [x.comparison.variant for x in tested] == ["v3_bf", "v3_authors"]  # LT table absent
    gain, level = tested
    assert gain.p_holm == pytest.approx(2 * gain.test.p)  # the smaller p of two, times 2
    text = sentences(tested)
    assert text.startswith("**1 of the 2 planned comparisons differs")
    assert "12 epochs, kNN: a gain of 1.00 points, paired +1.00 ± 0.08 (n = 4" in text
    assert (f"no difference detectable above {level.detectable:.1f} points, "
            "paired +0.00 ± 1.15") in text
    assert level.detectable == pytest.approx(detectable(4, 2 / math.sqrt(3), 0.05 / len(FAMILY)))


def test_the_readmes_hold_the_reports_tests_from_the_committed_runs():
    tested = run_tests(REPO / "experiments" / "results")

    def block(path, name):
        text = path.read_text().split(f"<!-- {name}_summary -->")[1]
        return text.split(f"<!-- /{name}_summary -->")[0].strip("\n")

    assert block(REPO / "README.md", "study_verdict") == sentences(tested).strip("\n")
    assert block(REPO / "experiments" / "README.md", "study_tests") == markdown(tested).strip("\n")


def test_write_tests_splices_the_table_and_the_sentences(tmp_path):
    write_csv(tmp_path / "study_runs.csv",
              [{"name": n, "seed": s, "knn_end": 40.0 + s * (n == "v3_bf")}
               for n in ("v3", "v3_bf") for s in range(3)])
    doc = tmp_path / "doc.md"
    doc.write_text("a\n<!-- study_tests_summary -->\nold\n<!-- /study_tests_summary -->\nb\n"
                   "<!-- study_verdict_summary -->\n<!-- /study_verdict_summary -->\n")
    write_tests(tmp_path, [doc])
    text = doc.read_text()
    assert ("old" not in text
            and "| `mocov3_bf` vs MoCo-v3, 12 epochs, kNN | 3 | +1.00 ± 1.00 |" in text)
    assert "**0 of the 1 planned" not in text and "**None of the 1 planned comparisons" in text
    assert (tmp_path / "study_tests.md").read_text().startswith("| comparison |")
