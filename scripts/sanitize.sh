#!/usr/bin/env bash
# The dialect, runtime and torch-op tests under AddressSanitizer + UndefinedBehaviorSanitizer, in
# a build directory of their own (build-asan/, or $1). Any sanitizer report fails the run.
#   bash scripts/sanitize.sh [BUILD_DIR]      (make sanitize)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-asan}
start=$(date +%s)
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTN_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" >/dev/null
fi
# Only what the sanitized suites run: the dialect and pass tests (lit, unit), the runtime (cache,
# JIT, CUDA driver layer against the stand-in libcuda) and the torch op.
cmake --build "$BUILD" --target attn-opt attnc attn-demo attn-unit-tests attn-runtime-tests \
  attn-cache-probe attn-gpu-launch-tests attn-torch-tests
built=$(date +%s)
echo "sanitize: built in $((built - start)) s"
# detect_leaks: the JIT and the caches keep process-lifetime singletons on purpose, reachable
# through static pointers, so LeakSanitizer reports only real leaks.
# allow_user_poisoning=0: LLVM's BumpPtrAllocator, inlined from its headers into our
# instrumented code, poisons the rest of each new slab; Debian's uninstrumented libMLIR then
# allocates from the same slab (the context's attribute and location uniquers) without
# unpoisoning, and ASan would report its own writes as use-after-poison (seen when an attn
# attribute opened a slab that FileLineColRange::get then filled).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:allow_user_poisoning=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ATTN_CACHE_DIR="$PWD/$BUILD/test-kernel-cache"
status=0
for suite in attn-unit-tests attn-runtime-tests attn-gpu-launch-tests attn-torch-tests; do
  echo "sanitize: $suite"
  "$BUILD/bin/$suite" --gtest_brief=1 || status=1
done
echo "sanitize: lit suite (attn-opt, attnc, attn-demo sanitized)"
"$(grep -m1 '^LLVM_EXTERNAL_LIT' "$BUILD/CMakeCache.txt" | cut -d= -f2)" -q "$BUILD/test" || status=1
echo "sanitize: tests took $(( $(date +%s) - built )) s"
exit $status
