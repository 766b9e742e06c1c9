#!/usr/bin/env bash
# Every attn-train recipe on the offline data with small CPU budgets, each against its untrained
# or from-scratch baseline, then one markdown table (the README's recipe results):
#   nice -n 19 models/recipes/results-table.sh [OUT_DIR]        (default runs/results-table)
# Two lanes of runs go side by side (one thread each); progress lines go to stderr, every run's
# output to OUT_DIR/NAME.log, its figures to OUT_DIR/NAME/summary.txt. `--table-only` prints the
# table from finished runs. Budgets: SUP_STEPS (supervised, default 1500), SSL_STEPS (1000).
# SEEDS (default "0 1"): the seeds of the rows with small margins (MP3 vs scratch, distilled
# student vs alone, BYOL vs BYOV) and of the EWC fine-tunings (all from seed 0's BYOL); every
# other row is seed 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${ATTN_TRAIN:-build/bin/attn-train}
TABLE_ONLY=0
if [[ ${1:-} == --table-only ]]; then TABLE_ONLY=1; shift; fi
OUT=${1:-runs/results-table}
SUP_STEPS=${SUP_STEPS:-1500}
SSL_STEPS=${SSL_STEPS:-1000}
SEEDS=${SEEDS:-0 1}
mkdir -p "$OUT"

COMMON="--progress=false --plot=false --threads=1 --seed=0"
VIT="--dataset=fashion-mnist --patch-size=7 --embed-dim=64 --depth=2 --heads=4 --mlp-ratio=2 --pool=mean $COMMON"
SUP="$VIT --batch-size=128 --steps=$SUP_STEPS --lr=2e-3 --warmup-steps=100 --eval-every=$SUP_STEPS --eval-samples=2000"
SSL="$VIT --batch-size=128 --steps=$SSL_STEPS --warmup-steps=50 --eval-every=$SSL_STEPS --knn-bank=5000 \
  --knn-queries=2000 --probe-train=5000 --probe-test=2000 --probe-steps=300"
STUDENT="--dataset=fashion-mnist --patch-size=7 --embed-dim=32 --depth=1 --heads=2 --mlp-ratio=2 --pool=mean $COMMON \
  --batch-size=128 --steps=$SUP_STEPS --lr=2e-3 --warmup-steps=100 --eval-every=$SUP_STEPS --eval-samples=2000"
# Forgetting (EWC): fine-tune the BYOL backbone on classes 0-4 only, then measure what its
# features kept on the held-out classes 5-9 (k-NN and linear probe of the frozen backbone, as the
# SSL rows: `byol --steps=1 --init=X`, whose _step0 figures are X's features before its one step).
TASK="--classes=0-4"
HELD="$SSL --classes=5-9 --steps=1 --warmup-steps=0"
ASR="--dataset=spoken-digits --embed-dim=64 --depth=2 --heads=4 --n-mels=40 --subsampling-channels=32 \
  --batch-size=32 --lr=2e-3 --warmup-steps=30 $COMMON"

run() { # NAME RECIPE OPTIONS...
  local name=$1 start=$SECONDS
  shift
  if [[ -f $OUT/$name/summary.txt || -f $OUT/$name/finetune/summary.txt ]]; then
    echo "[$(date +%T)] $name: done before" >&2
    return
  fi
  echo "[$(date +%T)] $name: attn-train $*" >&2
  if "$BIN" "$@" --out="$OUT/$name" >"$OUT/$name.log" 2>&1; then
    echo "[$(date +%T)] $name: $((SECONDS - start)) s: $(tail -1 "$OUT/$name.log")" >&2
  else
    echo "[$(date +%T)] $name: FAILED, see $OUT/$name.log" >&2
  fi
}

suffix() { [[ $1 == 0 ]] || echo "-s$1"; } # a seed's run names: seed 0 has none

laneA() {
  run vit-softmax vit-supervised $SUP
  run vit-sigmoid vit-supervised $SUP --attention=sigmoid
  run vit-softmax-sigma vit-supervised $SUP --sigma-reparam
  run vit-sigmoid-sigma vit-supervised $SUP --attention=sigmoid --sigma-reparam
  run student-alone vit-supervised $STUDENT
  run distill distill $STUDENT --teacher="$OUT/vit-softmax/model.pt"
  run mp3 mp3 $SUP --pretrain-steps=$SSL_STEPS
  for seed in $SEEDS; do # seed 0 is the runs above; the teacher stays seed 0's vit-softmax
    [[ $seed == 0 ]] && continue
    run vit-softmax-s$seed vit-supervised $SUP --seed=$seed
    run student-alone-s$seed vit-supervised $STUDENT --seed=$seed
    run distill-s$seed distill $STUDENT --teacher="$OUT/vit-softmax/model.pt" --seed=$seed
    run mp3-s$seed mp3 $SUP --pretrain-steps=$SSL_STEPS --seed=$seed
  done
  run asr-untrained asr-ctc $ASR --steps=1
  run asr-ctc asr-ctc $ASR --steps=$SUP_STEPS
}

laneB() {
  run simclr simclr $SSL
  run polyview-m4-geometric polyview $SSL --views=4 --loss=geometric
  run polyview-m4-arithmetic polyview $SSL --views=4 --loss=arithmetic
  run byol-b128 byol $SSL
  run byol-b256 byol $SSL --batch-size=256
  run byol-b256-rule byol $SSL --batch-size=256 --reference-batch-size=128 --ema-scaling-rule
  run byol-er byol $SSL --objective=er
  run byov byol $SSL --predictor=bayesian
  run finetune-byol vit-supervised $SUP --init="$OUT/byol-b128/model.pt"
  run finetune-byol-ewc1 vit-supervised $SUP --init="$OUT/byol-b128/model.pt" --ewc-lambda=1
  run finetune-byol-ewc100 vit-supervised $SUP --init="$OUT/byol-b128/model.pt" --ewc-lambda=100
  for seed in $SEEDS; do # BYOL against BYOV (calibration) on a second seed
    [[ $seed == 0 ]] && continue
    run byol-b128-s$seed byol $SSL --seed=$seed
    run byov-s$seed byol $SSL --predictor=bayesian --seed=$seed
  done
  run heldout-untrained byol $HELD
  run heldout-byol byol $HELD --init="$OUT/byol-b128/model.pt"
  for seed in $SEEDS; do
    for l in 0 1 100; do
      local tuned=task-finetune-ewc$l$(suffix $seed)
      run $tuned vit-supervised $SUP $TASK --init="$OUT/byol-b128/model.pt" --ewc-lambda=$l --seed=$seed
      run heldout-$tuned byol $HELD --init="$OUT/$tuned/model.pt"
    done
  done
}

if [[ $TABLE_ONLY == 0 ]]; then
  [[ -x $BIN ]] || { echo "results-table: $BIN is missing (make build)" >&2; exit 2; }
  laneA &
  laneB &
  wait
fi

value() { # RUN KEY [SUBDIR] → the figure, or "–"
  local file=$OUT/$1/${3:+$3/}summary.txt
  awk -v k="$2" '$1 == k { printf "%.4f", $2; found = 1 } END { if (!found) printf "–" }' "$file" 2>/dev/null || printf "–"
}
pct() { local v; v=$(value "$@"); [[ $v == – ]] && echo – || awk -v v="$v" 'BEGIN { printf "%.1f %%", 100 * v }'; }

seeded() { [[ $1 == 0 ]] || echo ", seed $1"; } # a seed's note in the table: seed 0 has none

echo "| run | figure | result | baseline | baseline is |"
echo "|---|---|---|---|---|"
for r in vit-softmax vit-sigmoid vit-softmax-sigma vit-sigmoid-sigma; do
  echo "| $r | test accuracy | $(pct $r test_accuracy) | – | (supervised: compare the rows) |"
done
for r in simclr polyview-m4-geometric polyview-m4-arithmetic byol-b128 byol-b256 byol-b256-rule byol-er byov; do
  echo "| $r | linear probe | $(pct $r linear_probe_accuracy) | $(pct $r linear_probe_accuracy_step0) | untrained encoder |"
  echo "| $r | k-NN | $(pct $r knn_accuracy) | $(pct $r knn_accuracy_step0) | untrained encoder |"
done
for seed in $SEEDS; do
  [[ $seed == 0 ]] && continue
  for r in byol-b128 byov; do
    echo "| $r$(seeded $seed) | linear probe / k-NN | $(pct $r-s$seed linear_probe_accuracy) / $(pct $r-s$seed knn_accuracy) | $(pct $r-s$seed linear_probe_accuracy_step0) / $(pct $r-s$seed knn_accuracy_step0) | untrained encoder (seed $seed) |"
  done
done
for seed in $SEEDS; do
  for r in byol-b128 byov; do
    t=$r$(suffix $seed)
    echo "| $r$(seeded $seed) | probe ECE / Brier | $(value $t linear_probe_ece) / $(value $t linear_probe_brier) | $(value $t linear_probe_ece_step0) / $(value $t linear_probe_brier_step0) | untrained encoder |"
  done
done
for seed in $SEEDS; do
  echo "| mp3 → fine-tune$(seeded $seed) | test accuracy | $(pct mp3$(suffix $seed) test_accuracy finetune) | $(pct vit-softmax$(suffix $seed) test_accuracy) | vit-softmax$(seeded $seed) (same steps, from scratch) |"
done
echo "| mp3 pretraining | test position accuracy | $(pct mp3 test_position_accuracy pretrain) | 6.2 % | chance (1/16) |"
echo "| byol → fine-tune | test accuracy | $(pct finetune-byol test_accuracy) | $(pct vit-softmax test_accuracy) | vit-softmax (from scratch) |"
for l in 1 100; do
  echo "| byol → fine-tune + EWC λ=$l | test accuracy | $(pct finetune-byol-ewc$l test_accuracy) | $(pct finetune-byol test_accuracy) | fine-tuning without EWC |"
done
echo "| byol, held-out classes 5-9 | k-NN / linear probe | $(pct heldout-byol knn_accuracy_step0) / $(pct heldout-byol linear_probe_accuracy_step0) | $(pct heldout-untrained knn_accuracy_step0) / $(pct heldout-untrained linear_probe_accuracy_step0) | untrained encoder |"
for l in 0 1 100; do
  for seed in $SEEDS; do
    t=task-finetune-ewc$l$(suffix $seed) what="byol → fine-tune on 0-4, EWC λ=$l$(seeded $seed)"
    echo "| $what | test accuracy (0-4) | $(pct $t test_accuracy) | – | (compare the λ rows) |"
    echo "| $what | held-out 5-9 k-NN / probe | $(pct heldout-$t knn_accuracy_step0) / $(pct heldout-$t linear_probe_accuracy_step0) | $(pct heldout-byol knn_accuracy_step0) / $(pct heldout-byol linear_probe_accuracy_step0) | the BYOL backbone before fine-tuning |"
  done
done
for seed in $SEEDS; do
  echo "| distill (student)$(seeded $seed) | test accuracy | $(pct distill$(suffix $seed) test_accuracy) | $(pct student-alone$(suffix $seed) test_accuracy) | student trained alone$(seeded $seed) |"
done
echo "| asr-ctc | test CER / WER | $(value asr-ctc test_cer) / $(value asr-ctc test_wer) | $(value asr-untrained test_cer) / $(value asr-untrained test_wer) | 1 step (untrained) |"
