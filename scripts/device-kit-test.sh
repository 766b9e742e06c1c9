#!/usr/bin/env bash
# The device kit's self-test (make device-kit-test; CI): builds the kit (scripts/device-kit.sh),
# unpacks it into a temporary folder and runs test/gpu/kit_tool.py check from there: the op
# library needs no LLVM/MLIR (readelf, ldd), loads in a fresh Python with no LD_LIBRARY_PATH,
# computes the CPU kernels right, finds every GPU variant in the kit's kernel cache, and its
# launch path drives the stand-in libcuda as GpuLaunchTest expects; run.sh --dry-run writes its
# report. Skipped, with the reason, only when the kit cannot be built here (device-kit.sh's 77).
#   bash scripts/device-kit-test.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-kit}
start=$(date +%s)
status=0
bash scripts/device-kit.sh "$BUILD" || status=$?
if [ "$status" = 77 ]; then
  echo "device-kit-test: SKIPPED (the kit cannot be built here; reason above)"
  exit 0
fi
[ "$status" = 0 ] || { echo "device-kit-test: FAILED: the kit did not build"; exit "$status"; }
built=$(date +%s)
work=$(mktemp -d /tmp/attn-kit-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xJf "$BUILD/attn-device-kit.tar.xz"
python=.venv/bin/python
[ -x "$python" ] || python=$(command -v python3)
env -u LD_LIBRARY_PATH "$python" "$work/attn-kit/test/gpu/kit_tool.py" check --kit "$work/attn-kit"
echo "device-kit-test: passed (kit $((built - start)) s, self-test $(($(date +%s) - built)) s)"
