#!/usr/bin/env bash
# Carry the unfinished full-CIFAR-10 runs (study_full_grid.yaml, ~6 h each here) across
# machines that keep nothing but the repository: a session ends long before such a run does.
#
#   experiments/carry_runs.sh save OUT      # before the session ends: commit each unfinished
#                                           # run's record and its last complete checkpoint
#   experiments/carry_runs.sh restore OUT   # next session, before power_plan.sh: put them back
#                                           # so study.py resumes them (train.resume=auto)
#
# OUT is power_plan.sh's output folder; the carried copies live in experiments/results/carry/.
# Only the last checkpoint travels (~46 MB for the study's quarter-width MoCo-v3: both encoders
# and LARS's momentum, fp32, all needed for an exact resume); a run that has finished (its
# result.json archived by archive_runs.sh) has its carried copy removed by the next save.
# The 12-epoch runs are not carried: one lost at a session's end costs < 1 h, not 46 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:?usage: experiments/carry_runs.sh save|restore OUT}"
OUT="$(cd "${2:?usage: experiments/carry_runs.sh save|restore OUT}" && pwd)"
CARRY=experiments/results/carry
ARCHIVE=experiments/results/study_full_runs

save() {
    local run rel dest last
    for run in "$OUT"/study_full/*/seed*; do
        [ -d "$run" ] || continue
        rel="${run#"$OUT"/study_full/}"
        dest="$CARRY/$rel"
        if [ -f "$ARCHIVE/$rel/result.json" ]; then  # finished and archived: nothing to carry
            [ -d "$dest" ] && git rm -rq "$dest"
            continue
        fi
        last="$(python -c "import sys; from ssl_bf.rundir.checkpoint import find_latest; \
p = find_latest(sys.argv[1]); print(p or '')" "$run/checkpoints")"
        [ -n "$last" ] || continue  # not one complete checkpoint yet
        rm -rf "$dest" && mkdir -p "$dest/checkpoints"
        cp "$run"/config.yaml "$run"/metrics.jsonl "$dest/"
        [ -f "$run/config_changes.jsonl" ] && cp "$run/config_changes.jsonl" "$dest/"
        cp -r "$last" "$dest/checkpoints/"
        ln -s "$(basename "$last")" "$dest/checkpoints/last"
        git add "$dest"
    done
    if git diff --cached --quiet -- "$CARRY"; then
        echo "nothing to carry"
        return
    fi
    git commit -q -m "Study: carry the unfinished full-CIFAR-10 runs to the next session ($(
        cd "$CARRY" && for d in */seed*; do
            printf '%s at step %s; ' "$d" "$(readlink "$d/checkpoints/last" | sed 's/step_0*//')"
        done))" -- "$CARRY"
    git log -1 --format=%s
}

restore() {
    local dest rel run
    for dest in "$CARRY"/*/seed*; do
        [ -d "$dest" ] || continue
        rel="${dest#"$CARRY"/}"
        run="$OUT/study_full/$rel"
        if [ -d "$run/checkpoints" ]; then  # this machine got further: keep its run
            echo "kept $run"
            continue
        fi
        mkdir -p "$run" && cp -a "$dest"/. "$run/"
        echo "restored $run at $(readlink "$run/checkpoints/last")"
    done
}

case "$MODE" in
    save) save ;;
    restore) restore ;;
    *) echo "usage: experiments/carry_runs.sh save|restore OUT" >&2; exit 2 ;;
esac
