#!/usr/bin/env bash
# Commit each run a study worktree finishes into this checkout, as it lands: its archived
# config.yaml, metrics.jsonl and result.json (experiments/results/<report>_runs/...), one
# commit a run with its kNN in the message, nothing else staged. Loops until stopped.
#
#   experiments/archive_runs.sh ../wt        # from the checkout that commits (main)
set -uo pipefail
cd "$(dirname "$0")/.."
WT="$(cd "${1:?usage: experiments/archive_runs.sh WORKTREE}" && pwd)"
commit=$(git -C "$WT" rev-parse --short HEAD)
while true; do
    for res in "$WT"/experiments/results/study*_runs/*/seed*/result.json; do
        [ -f "$res" ] || continue
        dir=$(dirname "${res#"$WT"/}")
        [ -f "$dir/result.json" ] && continue
        mkdir -p "$dir" && cp "$WT/$dir"/* "$dir/"
        what=$(python - "$dir" <<'PY'
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line]
knn = [r["knn_top1"] for r in rows if "knn_top1" in r]
result = json.loads((d / "result.json").read_text())
text = f"kNN {knn[-1]:.2f}" if knn else "no kNN"
if result.get("linear_top1") is not None:
    text += f", probe {result['linear_top1']:.2f}"
print(text)
PY
)
        name="$(basename "$(dirname "$dir")") $(basename "$dir")"
        for _ in 1 2 3 4 5; do  # another commit may hold the index for a moment
            git add -- "$dir" && git commit -q -m "Study: $name ($what), run from the worktree at $commit" -- "$dir" && break
            sleep 5
        done
        echo "$(date +%H:%M) committed $dir ($what)"
    done
    sleep 60
done
