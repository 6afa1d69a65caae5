#!/usr/bin/env bash
# The runs of the power plan (experiments/README.md, "Power"), in its order, one at a time:
#   seeds 3-5 of the 12-epoch v3 / v3_bf / v3_authors rows (each seed's three runs back to
#   back, so a pair runs on one machine), seeds 3-5 of the CIFAR-10-LT rows, seeds 6-9 of the
#   12-epoch rows, then the full-CIFAR-10 pair (study_full_grid.yaml).
# Run it from a worktree at a fixed commit; every study.py call skips what the archive
# (experiments/results/) already holds and resumes an interrupted run (train.resume=auto).
#
#   git worktree add ../wt <commit> && ../wt/experiments/power_plan.sh DATA_ROOT OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:?usage: experiments/power_plan.sh DATA_ROOT OUT_DIR}"
OUT="${2:?usage: experiments/power_plan.sh DATA_ROOT OUT_DIR}"
study() { python experiments/study.py --root "$ROOT" "$@"; }
study --only v3,v3_bf,v3_authors --seeds 3,4,5 --out "$OUT/study"
study --grid experiments/study_lt_grid.yaml --only lt_v3,lt_v3_bf --seeds 3,4,5 --out "$OUT/study_lt"
study --only v3,v3_bf,v3_authors --seeds 6,7,8,9 --out "$OUT/study"
study --grid experiments/study_full_grid.yaml --out "$OUT/study_full"
