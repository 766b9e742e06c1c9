#!/usr/bin/env bash
# The GPU machine's one script (issue 18), run from the unpacked device kit, within 8 minutes:
#   1. preflight: the GPU, torch's version against the kit's, the op library's dependencies;
#   2. numerics, stopping at the first failing stage: attnc's PTX through attn-ptx-check
#      (test/gpu/ptx-numerics.py), then the torch op through the runtime's launcher against
#      float64 (bench/gpu/numerics.py: every normalizer and score_mod × causal × D × dtype, GQA,
#      odd lengths, O/LSE and dQ/dK/dV); then the experimental wgmma forward (reported only);
#   3. speed (bench/gpu/speed.py): ours vs SDPA flash/cuDNN/efficient and FlexAttention, first
#      calls, recompiles, a ViT-B/16 step; writes OUT/<gpu>-<date>.md, .png, .json.
#
#   bash attn-kit/bench/gpu/run.sh [--out DIR] [--quick] [--keep-going] [--budget-s 480]
#                                  [--skip-ptx] [--skip-numerics] [--dry-run]
#
# --out: default $OUT when set (the device tool's folder), else bench/results of the kit.
# --keep-going: time speed even when numerics fail (the report says they failed).
# --dry-run: no GPU needed: checks the arguments and writes the report and plot from fake
#   timings (the kit's self-test runs this).
# The kit's paths mirror the repository's, so from a repository checkout with a built kit
# (ATTN_TORCH_LIBRARY=build-kit/lib/libattn_torch.so) the same script runs too.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${OUT:-$root/bench/results}"
quick=() keep_going=0 budget=480 skip_ptx=0 skip_numerics=0 dry_run=0
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    --quick) quick=(--quick); shift ;;
    --keep-going) keep_going=1; shift ;;
    --budget-s) budget="$2"; shift 2 ;;
    --budget-s=*) budget="${1#--budget-s=}"; shift ;;
    --skip-ptx) skip_ptx=1; shift ;;
    --skip-numerics) skip_numerics=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$budget" in ''|*[!0-9]*) echo "run.sh: --budget-s takes whole seconds" >&2; exit 2 ;; esac
python="${PYTHON:-python3}"
mkdir -p "$out" || exit 1
stamp="$(date +%Y-%m-%d)"

if [ "$dry_run" = 1 ]; then
  exec "$python" "$here/speed.py" --dry-run --out "$out" "${quick[@]}"
fi

log="$out/run-$stamp.log"
exec > >(tee -a "$log") 2>&1
SECONDS=0
step() { echo; echo "=== [${SECONDS}s] $*"; }
left() { echo $((budget - SECONDS)); }

export ATTN_TORCH_LIBRARY="${ATTN_TORCH_LIBRARY:-$root/lib/libattn_torch.so}"
export PYTHONPATH="$root/frontend/python:$root/bench/gpu:$root/test/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# The kit's kernel cache, copied (the kit stays as packed); the driver's own PTX → SASS cache
# beside it.
cache="${TMPDIR:-/tmp}/attn-kit-cache-$$"
rm -rf "$cache"
if [ -d "$root/cache" ]; then cp -r "$root/cache" "$cache"; else mkdir -p "$cache"; fi
export ATTN_CACHE_DIR="$cache"
export CUDA_CACHE_PATH="${CUDA_CACHE_PATH:-${TMPDIR:-/tmp}/attn-kit-nv-cache}"
unset ATTN_CACHE_DISABLE ATTN_LIBCUDA FAKE_CUDA_DEVICES

step "preflight"
[ -f "$root/MANIFEST" ] && sed -n '1,6p' "$root/MANIFEST"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv,noheader 2>/dev/null || echo "(nvidia-smi not available)"
"$python" - <<'PY' || { echo "run.sh: FAILED: preflight"; exit 1; }
import os, sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch")
props = torch.cuda.get_device_properties(0)
print(f"device: {props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
      f"{props.total_memory / 2**30:.0f} GiB")
manifest = os.path.join(os.path.dirname(os.path.dirname(os.environ["ATTN_TORCH_LIBRARY"])),
                        "MANIFEST")
if os.path.exists(manifest):
    built = [l.split()[1] for l in open(manifest) if l.startswith("torch:")][0]
    if built.split("+")[0] != torch.__version__.split("+")[0]:
        sys.exit(f"the kit was built against torch {built}, this is {torch.__version__}")
torch.ops.load_library(os.environ["ATTN_TORCH_LIBRARY"])
print("op library loaded:", os.environ["ATTN_TORCH_LIBRARY"])
PY
if [ -f "$root/test/gpu/kit_tool.py" ]; then
  "$python" "$root/test/gpu/kit_tool.py" needed "$ATTN_TORCH_LIBRARY" ||
    echo "run.sh: warning: the dependency check failed (loading worked, so going on)"
fi

numerics_failed=""
fail_stage() {
  numerics_failed="$numerics_failed $1"
  if [ "$keep_going" = 0 ]; then
    echo "run.sh: STOP: $1 failed; no timing (--keep-going times anyway). Log: $log"
    exit 1
  fi
}

checker="$root/bin/attn-ptx-check"
if [ "$skip_ptx" = 0 ]; then
  step "numerics 1/3: attnc's PTX through attn-ptx-check against float64"
  if [ -x "$checker" ] && [ -d "$root/test/gpu/ptx" ]; then
    timeout 150 "$python" "$root/test/gpu/ptx-numerics.py" --checker "$checker" \
      --ptx-dir "$root/test/gpu/ptx" --target sm_90a "${quick[@]}" || fail_stage ptx-numerics
  else
    echo "(no attn-ptx-check or PTX in this tree: skipped)"
  fi
fi
if [ "$skip_numerics" = 0 ]; then
  step "numerics 2/3: the torch op (runtime launcher) against float64"
  timeout 240 "$python" "$here/numerics.py" "${quick[@]}" || fail_stage torch-op-numerics
fi
if [ "$skip_ptx" = 0 ] && [ -x "$checker" ] && [ -d "$root/test/gpu/ptx-wgmma" ]; then
  step "numerics 3/3: the experimental wgmma forward (reported, not a stop)"
  timeout 60 "$python" "$root/test/gpu/ptx-numerics.py" --checker "$checker" --wgmma \
    --ptx-dir "$root/test/gpu/ptx-wgmma" --target sm_90a "${quick[@]}" ||
    echo "run.sh: wgmma numerics did not all pass (experimental; see above)"
fi

remaining=$(left)
step "speed (budget ${remaining}s)"
if [ "$remaining" -lt 90 ]; then
  echo "run.sh: no time left for the speed run"
  exit 1
fi
speed_status=0
timeout "$remaining" "$python" "$here/speed.py" --out "$out" --budget-s $((remaining - 50)) \
  "${quick[@]}" || speed_status=$?
if [ -n "$numerics_failed" ]; then
  report=$(ls -t "$out"/*.md 2>/dev/null | head -1)
  [ -n "$report" ] && printf '\n**Numerics failed in this run:%s (timed with --keep-going).**\n' \
    "$numerics_failed" >>"$report"
fi
rm -rf "$cache"
step "done (speed exit $speed_status${numerics_failed:+; numerics failed:$numerics_failed}); log $log"
[ "$speed_status" = 0 ] && [ -z "$numerics_failed" ]
