#!/usr/bin/env bash
# Issue 15's speech target: the asr-ctc recipe (models/recipes/results-table.sh's settings) with
# its ragged batches as one attention call per layer (kv_lengths, the models' path) against the
# per-length calls the models made before (one call per group of samples sharing a key length;
# restored for this measurement by ATTN_MODELS_PER_LENGTH_CALLS=1, models/Attention.cpp).
# Same seed, so the same batches; `nice -n 19`; one and two intra-op threads; the two paths
# alternate within each repetition. Time: the run's wall_seconds (OUT/summary.txt: STEPS training
# steps, then the final evaluation on the 200 test utterances and the checkpoint). Kernels come
# from a disk cache filled by an untimed warm-up run of each path, and ATTN_TIERED_COMPILE=0, so
# no timed run executes quick-tier code.
#   bench/cpu/bench_asr_ragged.sh [OUT.md]        (STEPS=75: two epochs of 1200; REPS=3)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${ATTN_TRAIN:-build/bin/attn-train}
STEPS=${STEPS:-75}
REPS=${REPS:-3}
MD=${1:-}
RUNS=${RUNS:-/tmp/attn-asr-ragged}
export ATTN_CACHE_DIR=${ATTN_CACHE_DIR:-/tmp/attn-cache-bench}
export ATTN_TIERED_COMPILE=0
ASR="--dataset=spoken-digits --embed-dim=64 --depth=2 --heads=4 --n-mels=40 --subsampling-channels=32
  --batch-size=32 --lr=2e-3 --warmup-steps=30 --progress=false --plot=false --seed=0 --eval-every=0"
rm -rf "$RUNS"
mkdir -p "$RUNS"

run() { # NAME PER_LENGTH THREADS STEPS
  ATTN_MODELS_PER_LENGTH_CALLS=$2 nice -n 19 "$BIN" asr-ctc $ASR --threads="$3" --steps="$4" \
    --out="$RUNS/$1" >"$RUNS/$1.log" 2>&1
}
value() { awk -v key="$2" '$1 == key { printf "%.6g\n", $2 }' "$RUNS/$1/summary.txt"; }
wall() { awk '$1 == "wall_seconds" { printf "%.2f\n", $2 }' "$RUNS/$1/summary.txt"; }
final_loss() { tail -1 "$RUNS/$1/metrics.jsonl" | sed 's/.*"loss":\([^,]*\),.*/\1/'; }

for path in 0 1; do run "warm-up-$path" "$path" 2 2; done
rows=()
for rep in $(seq 1 "$REPS"); do
  for threads in 1 2; do
    for path in 0 1; do
      name="t$threads-p$path-r$rep"
      before=$(cut -d' ' -f1-3 /proc/loadavg)
      run "$name" "$path" "$threads" "$STEPS"
      after=$(cut -d' ' -f1-3 /proc/loadavg)
      line="| $threads | $([[ $path == 0 ]] && echo "one call (kv_lengths)" || echo "per-length calls") | $rep | $(wall "$name") | $(final_loss "$name") | $(value "$name" test_loss) | $(value "$name" test_cer) | $before → $after |"
      echo "$line" >&2
      rows+=("$line")
    done
  done
done

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
summary=("| threads | one call (kv_lengths) s | per-length calls s | per-length / one call |" "|---|---|---|---|")
for threads in 1 2; do
  one=$(for r in $(seq 1 "$REPS"); do wall "t$threads-p0-r$r"; done | median)
  per=$(for r in $(seq 1 "$REPS"); do wall "t$threads-p1-r$r"; done | median)
  summary+=("| $threads | $one | $per | $(awk -v a="$per" -v b="$one" 'BEGIN { printf "%.3f×", a / b }') |")
done

{
  echo "# asr-ctc with ragged batches: one attention call per layer (kv_lengths) vs per-length calls"
  echo
  echo "Measured $(date +%F) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
    "($(nproc) CPUs), shared with other work (load average per run below)." \
    "\`attn-train asr-ctc $(echo $ASR) --threads=T --steps=$STEPS\`, nice -n 19, seed 0 for both paths" \
    "(the same batches; the losses agree), paths alternating, ATTN_TIERED_COMPILE=0 and kernels from" \
    "a disk cache filled by an untimed warm-up run of each path. wall s: the run's wall_seconds" \
    "(OUT/summary.txt: $STEPS training steps of 32 utterances, then the final evaluation on the 200" \
    "test utterances and the checkpoint). Per-length calls: ATTN_MODELS_PER_LENGTH_CALLS=1."
  echo
  echo "Command: \`REPS=$REPS STEPS=$STEPS bench/cpu/bench_asr_ragged.sh $MD\`"
  echo
  echo "| threads | attention path | rep | wall s | last train loss | test loss | test CER | load before → after |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Medians of $REPS:"
  echo
  printf '%s\n' "${summary[@]}"
} | tee "$RUNS/table.md"
if [[ -n $MD ]]; then
  cp "$RUNS/table.md" "$MD"
fi
