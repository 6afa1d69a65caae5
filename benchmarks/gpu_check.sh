#!/usr/bin/env bash
# The GPU check, in two parts that fit a 15-minute device lease (machine start included).
#
#   benchmarks/gpu_prepare.sh PACK.npz        # HERE, once: data pack + missing wheels, git-ignored
#   run(command="bash benchmarks/gpu_check.sh a", carry=["gpu_data", ".whl"], timeout_s=420)
#   run(command="bash benchmarks/gpu_check.sh b", carry=["gpu_data", ".whl"], timeout_s=540)
#
#   part a (<= 4 min): every recipe 20 steps in bf16 on CUDA; end-to-end image pairs/s of
#          batched views vs PIL workers vs lightly's example loop (full-width ResNet-18,
#          CIFAR-10) and the 200-epoch wall time they imply; a kNN evaluation on GPU features;
#          JPEG decode per loader core at 500 x 375 and nvJPEG on the GPU (~25 s).
#   part b (<= 7 min): mocov3, mocov3_bf and mocov3_bf_authors side by side on the full
#          CIFAR-10, same seed, EPOCHS epochs each (default 8) after a 1-epoch warmup (the
#          recipes' 10 would outlast the run), kNN at the end.
# Each part fits one 600-s call with margin (`all` runs both: two calls' worth). Every run
# folder of a part is made afresh, so a rerun on a warm machine starts clean; a block that
# fails is reported as FAILED in the part's summary and the rest still runs.
#
# QUICK=1 runs both parts on this machine's CPU with tiny settings on the repository's
# 300-image fixture (tests/test_gpu_check.py, with RECIPES and B_RECIPES, part b's, cut to a
# failing name and one recipe each to keep the suite short), so the script cannot fail on a typo.
# Summaries go to $OUT (the device tool's folder that comes back; ./gpu_out elsewhere).
set -uo pipefail  # no -e: a failing block is reported (run_block) and the rest goes on
cd "$(dirname "$0")/.."
PART="${1:-all}"
OUT="${OUT:-gpu_out}"
RUNS="${RUNS:-/tmp/ssl_bf_gpu_runs}"
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # packages the device image lacks
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"  # ssl_bf from this tree (no pip install there)
PY="${PYTHON:-python3}"

if [ "${QUICK:-0}" = 1 ]; then
    ROOT="${ROOT:-tests/fixtures/cifar10}"; PREC=no; STEPS=2; SUBSET=96; BATCH=32; IMG=32
    SMALL=(model.width=0.25 method.proj_hidden=64 method.pred_hidden=64)
    SMALL_R50=(model.width=0.25 method.proj_hidden=64 method.pred_hidden=64)
    SMALL_VIT=(model.vit_depth=1 method.proj_hidden=64 method.pred_hidden=64)
    E2E=(--width 0.25 --batch 32 --steps 2 --log-every 1 --rounds 1 --model-repeats 1)
    EPOCHS="${EPOCHS:-1}"; B_SET=(train.batch_size=32 "${SMALL[@]}"); DECODE=(--rounds 1 --seconds 0.1)
else
    ROOT="${ROOT:-gpu_data/cifar10}"; PREC=bf16; STEPS=20; SUBSET=5120; BATCH=256; IMG=96
    SMALL=(); SMALL_R50=(); SMALL_VIT=()
    E2E=(--width 1.0 --batch 256 --steps 30 --log-every 5 --rounds 1 --model-repeats 5)
    EPOCHS="${EPOCHS:-8}"; B_SET=(train.batch_size=512 train.warmup_epochs=1); DECODE=(--rounds 2 --seconds 1)
    [ -d "$ROOT/train" ] || "$PY" benchmarks/npz_to_imagefolder.py gpu_data/cifar10_jpeg.npz "$ROOT"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$OUT/device.txt"

seconds() { date +%s.%N; }

# run_block LOG NAME CMD...: a block's failure is a FAILED line in LOG, not the end of the part
run_block() {
    local log="$1" name="$2"; shift 2
    "$@" || echo "FAILED $name (exit $?)" | tee -a "$log"
}

part_a() {
    local log="$OUT/gpu_a.txt"; : > "$log"
    rm -rf "$RUNS"/a_*  # a rerun on a warm machine starts clean
    echo "== every recipe, $STEPS steps, precision $PREC, aug.batched=true" | tee -a "$log"
    local trained=""  # the last recipe that trained: the kNN block evaluates it
    local recipes=(${RECIPES:-mocov3 mocov3_bf mocov3_bf_authors mocov2 mocov2_bf mocov2_bf_authors \
                   imagenet_mocov2_r50 imagenet_mocov3_r50 imagenet_mocov3_vits})
    for recipe in "${recipes[@]}"; do
        local extra=("${SMALL[@]}")
        case "$recipe" in  # ImageNet recipes on the CIFAR tree, upscaled (QUICK: tiny models)
            imagenet_*_r50) extra=(data.dataset=imagefolder "data.image_size=$IMG" "${SMALL_R50[@]}") ;;
            imagenet_*) extra=(data.dataset=imagefolder "data.image_size=$IMG" "${SMALL_VIT[@]}") ;;
        esac
        local t0; t0=$(seconds)
        "$PY" ssl_bf/pretrain.py "recipe=$recipe" "data.root=$ROOT" "data.subset=$SUBSET" \
            "train.batch_size=$BATCH" "train.max_steps=$STEPS" "train.precision=$PREC" \
            train.log_every=5 knn.every=0 aug.batched=true "train.output_dir=$RUNS/a_$recipe" \
            "${extra[@]}" > "$RUNS/a_$recipe.log" 2>&1 || { echo "FAILED $recipe" | tee -a "$log"; tail -5 "$RUNS/a_$recipe.log" | tee -a "$log"; continue; }
        trained="$recipe"
        "$PY" - "$recipe" "$RUNS/a_$recipe/metrics.jsonl" "$t0" "$(seconds)" <<'PYEOF' | tee -a "$log"
import json, sys
name, path, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rows = [json.loads(l) for l in open(path) if '"loss"' in l]
sps = [r["samples_per_s"] for r in rows[1:]] or [rows[-1]["samples_per_s"]]
print(f"{name:22s} loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}  "
      f"{sorted(sps)[len(sps) // 2]:8.0f} samples/s  launch {t1 - t0:5.1f} s")
PYEOF
    done
    echo "== end to end (MoCo-v2): batched views vs PIL workers vs lightly's example loop" | tee -a "$log"
    run_block "$log" end-to-end end_to_end_block
    echo "== kNN on GPU features (bank: the train split, queries: the test split)" | tee -a "$log"
    run_block "$log" knn knn_block "$trained"
    echo "== JPEG decode at 500 x 375 (real photos): per loader core, and nvJPEG on the GPU" | tee -a "$log"
    run_block "$log" decode decode_block
}
decode_block() {  # BENCHMARKS §11's table on this machine's cores, plus the decode_jpeg(cuda) row
    local log="$OUT/gpu_a.txt"
    "$PY" benchmarks/decode.py "${DECODE[@]}" > "$RUNS/a_decode.log" 2>&1 \
        || { tail -5 "$RUNS/a_decode.log" | tee -a "$log"; return 1; }
    grep -v '^{' "$RUNS/a_decode.log" | tee -a "$log"
}

end_to_end_block() {
    local log="$OUT/gpu_a.txt"
    "$PY" benchmarks/end_to_end.py --root "$ROOT" "${E2E[@]}" --precision "$PREC" \
        --json "$OUT/e2e.json" > "$RUNS/a_e2e.log" 2>&1 || { tail -5 "$RUNS/a_e2e.log" | tee -a "$log"; return 1; }
    tail -8 "$RUNS/a_e2e.log" | tee -a "$log"
    "$PY" - "$OUT/e2e.json" <<'PYEOF' | tee -a "$log"
import json, sys
e = json.load(open(sys.argv[1]))
for mode, rate in e["medians"].items():
    print(f"{mode:24s} 200 epochs of 50,000 images: {50000 * 200 / rate / 3600:6.2f} h")
PYEOF
}

knn_block() {
    local log="$OUT/gpu_a.txt" t0; t0=$(seconds)
    "$PY" eval/knn.py "checkpoint=$RUNS/a_$1" "data.root=$ROOT" data.subset=null > "$RUNS/a_knn.log" 2>&1 \
        || { tail -5 "$RUNS/a_knn.log" | tee -a "$log"; return 1; }
    tail -1 "$RUNS/a_knn.log" | cut -c1-160 | tee -a "$log"
    echo "kNN evaluation wall time $("$PY" -c "print(round($(seconds) - $t0, 1))") s" | tee -a "$log"
}

part_b() {
    local log="$OUT/gpu_b.txt"; : > "$log"
    rm -rf "$RUNS"/b_*  # a rerun on a warm machine starts clean
    echo "== one GPU-scale point: $EPOCHS epochs each, same seed, precision $PREC" | tee -a "$log"
    for recipe in ${B_RECIPES:-mocov3 mocov3_bf mocov3_bf_authors}; do
        local t0; t0=$(seconds)
        "$PY" ssl_bf/pretrain.py "recipe=$recipe" "data.root=$ROOT" "train.epochs=$EPOCHS" \
            "train.precision=$PREC" "knn.every=$EPOCHS" aug.batched=true train.seed=0 \
            "train.output_dir=$RUNS/b_$recipe" "${B_SET[@]}" > "$RUNS/b_$recipe.log" 2>&1 \
            || { echo "FAILED $recipe" | tee -a "$log"; tail -5 "$RUNS/b_$recipe.log" | tee -a "$log"; continue; }
        cp "$RUNS/b_$recipe/metrics.jsonl" "$OUT/b_$recipe.jsonl"
        "$PY" - "$recipe" "$RUNS/b_$recipe/metrics.jsonl" "$t0" "$(seconds)" <<'PYEOF' | tee -a "$log"
import json, sys
name, path, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rows = [json.loads(l) for l in open(path)]
knn = [r for r in rows if "knn_top1" in r][-1]
print(f"{name:20s} kNN top-1 {knn['knn_top1']:6.2f}  epoch {knn['epoch']}  wall {t1 - t0:6.1f} s")
PYEOF
    done
}

case "$PART" in
    a) part_a ;;
    b) part_b ;;
    all) part_a; part_b ;;
    *) echo "usage: benchmarks/gpu_check.sh [a|b|all]" >&2; exit 2 ;;
esac
! grep -qs '^FAILED' "$OUT"/gpu_*.txt  # the status: 1 if any block failed
