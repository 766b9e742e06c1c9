#!/usr/bin/env bash
# Builds the device kit (issue 18): everything the GPU machine (H100/H200, torch 2.11.0+cu130,
# Python 3.12, CUDA 13, no LLVM/MLIR, no network) needs to check and time the GPU kernels, with
# nothing to compile there:
#   lib/libattn_torch.so     the torch op library (CUDA kernel included), MLIR/LLVM linked in
#                            statically and hidden; loaded with torch.ops.load_library
#   lib/libattn_fake_cuda.so the stand-in libcuda (the kit's self-test)
#   bin/attn-ptx-check       on-GPU numerics of pre-emitted PTX (test/gpu/ptx-numerics.py)
#   test/gpu/ptx, ptx-wgmma  that PTX (attnc --emit=ptx, sm_90a), made here
#   cache/                   the kernel cache ($ATTN_CACHE_DIR) pre-filled with every variant of
#                            bench/gpu/variants.py, compiled here by the library itself
#   bench/gpu, test/gpu, test/python/reference.py, frontend/python/attn: the scripts
# mirrored at their repository paths, packed as attn-kit/ in BUILD/attn-device-kit.tar.xz (≤ 60 MiB).
#
#   bash scripts/device-kit.sh [BUILD_DIR]          (make device-kit; BUILD_DIR default build-kit)
#   ATTN_KIT_ATTNC=1   also pack bin/attnc (another ~22 MB xz; for tuning on the GPU machine)
#   ATTN_BUILD_LOCK    the flock file around the build (default /tmp/attn-build.lock)
#
# Exit status 0: built; 1: failed; 77: cannot be built here, for the reason printed (no static
# MLIR/LLVM archives, torch not the CUDA 13 build of 2.11.0, no CUDA toolkit for torch's CMake).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
BUILD=${1:-build-kit}
LOCK=${ATTN_BUILD_LOCK:-/tmp/attn-build.lock}
KIT_TORCH=${ATTN_KIT_TORCH_VERSION:-2.11.0+cu130}  # the GPU machine's torch
LIMIT_MIB=60
start=$(date +%s)

skip() { echo "device-kit: SKIPPED: $*"; exit 77; }

# --- can the kit be built here? -------------------------------------------------------------
llvm_config=$(command -v llvm-config-22 || true)
[ -n "$llvm_config" ] || skip "llvm-config-22 not found (llvm-22-dev)"
libdir=$("$llvm_config" --libdir)
"$llvm_config" --link-static --libfiles >/dev/null 2>&1 ||
  skip "$llvm_config --link-static --libfiles fails: no static LLVM libraries"
compgen -G "$libdir/libMLIR*.a" >/dev/null || skip "no static MLIR archives (libMLIR*.a) in $libdir"
python=${ATTN_TORCH_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=$(command -v python3); fi
fi
python=$(realpath -s "$python")
torch_version=$("$python" -c "import torch; print(torch.__version__)" 2>/dev/null) ||
  skip "$python cannot import torch (scripts/install-deps.sh makes .venv)"
[ "$torch_version" = "$KIT_TORCH" ] ||
  skip "torch here is $torch_version; the kit must be built against $KIT_TORCH, the GPU machine's"
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
  skip "no CUDA toolkit (nvcc): the CUDA torch's CMake package needs it"
command -v xz >/dev/null || skip "xz not installed"

# --- build ------------------------------------------------------------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTN_DEVICE_KIT=ON \
    -DATTN_TORCH_PYTHON="$python" >/dev/null
fi
flock "$LOCK" cmake --build "$BUILD" --target device-kit-binaries
built=$(date +%s)
echo "device-kit: built in $((built - start)) s"

# --- stage ------------------------------------------------------------------------------------
stage_parent="$BUILD/kit"
stage="$stage_parent/attn-kit"
rm -rf "$stage_parent"
mkdir -p "$stage"/{lib,bin,cache,test/gpu,test/python,bench/gpu,frontend/python}
strip --strip-unneeded -o "$stage/lib/libattn_torch.so" "$BUILD/lib/libattn_torch.so"
cp "$BUILD/lib/libattn_fake_cuda.so" "$stage/lib/"
strip -o "$stage/bin/attn-ptx-check" "$BUILD/bin/attn-ptx-check"
if [ "${ATTN_KIT_ATTNC:-0}" = 1 ]; then
  strip -o "$stage/bin/attnc" "$BUILD/bin/attnc"
fi
cp bench/gpu/*.py bench/gpu/run.sh "$stage/bench/gpu/"
cp test/gpu/ptx-numerics.py test/gpu/kit_tool.py "$stage/test/gpu/"
cp test/python/reference.py "$stage/test/python/"
cp -r frontend/python/attn "$stage/frontend/python/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

# What the op library needs at run time: libc, libstdc++, zlib, zstd, and torch's own libraries.
"$python" test/gpu/kit_tool.py needed "$stage/lib/libattn_torch.so" "$stage/bin/attn-ptx-check"

# PTX for attn-ptx-check (made by this build's attnc, for the H100/H200: sm_90a).
"$python" test/gpu/ptx-numerics.py --attnc "$BUILD/bin/attnc" --checker "$stage/bin/attn-ptx-check" \
  --target sm_90a --ptx-dir "$stage/test/gpu/ptx" --emit-only
"$python" test/gpu/ptx-numerics.py --attnc "$BUILD/bin/attnc" --checker "$stage/bin/attn-ptx-check" \
  --target sm_90a --ptx-dir "$stage/test/gpu/ptx-wgmma" --emit-only --wgmma
count=$(find "$stage/test/gpu/ptx" -name '*.ptx' -size +0 | wc -l)
[ "$count" -eq 24 ] || { echo "device-kit: FAILED: $count of 24 PTX files in test/gpu/ptx"; exit 1; }
# The experimental wgmma forward: what attnc builds of it (run.sh checks it, not fatally).
find "$stage/test/gpu/ptx-wgmma" -name '*.ptx' -size 0 -delete
echo "device-kit: $(find "$stage/test/gpu/ptx-wgmma" -name '*.ptx' | wc -l) of 24 wgmma PTX files"

# The kernel cache, filled by the staged library itself through the stand-in libcuda (a Hopper:
# sm_90a), so its keys are the ones the library computes on the GPU machine.
"$python" test/gpu/kit_tool.py fill --kit "$stage"
filled=$(date +%s)

# --- manifest and pack ------------------------------------------------------------------------
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain -- dialects passes codegen runtime frontend 2>/dev/null | head -c1)
cat >"$stage/MANIFEST" <<EOF
attn device kit
built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)
revision: $revision${dirty:+ (with uncommitted changes)}
torch: $torch_version (the op library is built against it; the GPU machine must have the same)
compiler: $("$llvm_config" --version), static, hidden
run on the GPU machine: bash attn-kit/bench/gpu/run.sh   (--help for options)
EOF
(cd "$stage" && find . -type f | sort | sed 's|^\./||' | xargs du -b) >>"$stage/MANIFEST"
output="$BUILD/attn-device-kit.tar.xz"
tar -C "$stage_parent" -cf - attn-kit | xz -T2 -6 >"$output.tmp"
mv "$output.tmp" "$output"
bytes=$(stat -c %s "$output")
echo "device-kit: $output: $((bytes / 1024 / 1024)) MiB ($bytes bytes; limit $LIMIT_MIB MiB)," \
  "library $(($(stat -c %s "$stage/lib/libattn_torch.so") / 1024 / 1024)) MiB unpacked"
echo "device-kit: built $((built - start)) s, staged and cache filled $((filled - built)) s," \
  "packed $(($(date +%s) - filled)) s"
if [ "$bytes" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
  echo "device-kit: FAILED: the kit is over $LIMIT_MIB MiB"
  exit 1
fi
