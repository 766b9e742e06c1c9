#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer + ASan + UBSan) of parse -> verify -> canonicalize ->
# attn-legalize -> attn-tile / attn-derive-backward, for a fixed time. Exits nonzero on any
# crash, hang (>10 s on one input), out-of-memory or sanitizer report, and prints the reproducer.
#   usage: scripts/fuzz.sh [SECONDS]          (default 120)
#   ATTN_FUZZ_BUILD   the build directory (default build-fuzz/: clang-22, -DATTN_FUZZ=ON)
#   ATTN_FUZZ_CLANG   the clang version (default 22, Debian's clang-22 + libclang-rt-22-dev, the
#                     LLVM of libMLIR; clang < 16 cannot compile passes/: it has no lambda
#                     captures of structured bindings)
# The corpus build-fuzz/corpus is kept between runs; the seeds (build-fuzz/corpus-seed) are
# rewritten each run from the lit tests, the examples and test/fuzz/regressions/ (the reproducers
# of past findings), one seed per `// -----` case.
# To search past a known finding until it is fixed (never in CI): ATTN_FUZZ_SKIP='substring|...'
# makes the fuzzer skip inputs containing any of them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
seconds="${1:-120}"
build="${ATTN_FUZZ_BUILD:-$root/build-fuzz}"
lock=/tmp/attn-build.lock

clang_version="${ATTN_FUZZ_CLANG:-22}"
for tool in "clang-$clang_version" "clang++-$clang_version"; do
  command -v "$tool" >/dev/null ||
    { echo "fuzz: $tool not found (scripts/install-deps.sh installs clang-22 and libclang-rt-22-dev)" >&2; exit 2; }
done

# Configure and build only the fuzzer, through the shared build lock.
start=$(date +%s)
if [ ! -f "$build/build.ninja" ]; then
  mkdir -p "$build"
  CC="clang-$clang_version" CXX="clang++-$clang_version" flock "$lock" cmake -S "$root" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DATTN_FUZZ=ON \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; rm -f "$build/CMakeCache.txt"; exit 2; }
fi
flock "$lock" cmake --build "$build" --target attn-pipeline-fuzzer
fuzzer="$build/bin/attn-pipeline-fuzzer"
echo "fuzz: built $fuzzer in $(( $(date +%s) - start )) s"

# Seeds: every lit case of the dialect and pass tests and every example, split on `// -----`,
# without full-line comments (RUN/CHECK/expected-* lines only slow the mutator down). Also a
# dictionary of the words they use (op, attribute and keyword spellings) for the mutator.
seeds="$build/corpus-seed"
rm -rf "$seeds"
mkdir -p "$seeds" "$build/corpus" "$build/artifacts"
python3 - "$seeds" "$build/attn.dict" test/dialects/attn/*.mlir test/passes/*.mlir \
  frontend/examples/*.mlir test/fuzz/regressions/*.mlir <<'PY'
import os, re, sys
seeds, dict_path, files = sys.argv[1], sys.argv[2], sys.argv[3:]
words, count = set(), 0
for path in files:
    if not os.path.isfile(path):
        continue
    text = open(path, encoding="utf-8").read()
    for i, case in enumerate(re.split(r"^// -----.*$", text, flags=re.M)):
        body = "\n".join(l for l in case.splitlines() if not l.lstrip().startswith("//")).strip()
        if not body or len(body) > 4096:
            continue
        name = os.path.relpath(path).replace("/", "_").removesuffix(".mlir")
        with open(os.path.join(seeds, f"{name}-{i}.mlir"), "w", encoding="utf-8") as f:
            f.write(body + "\n")
        count += 1
        words.update(re.findall(r"[#!^]?[A-Za-z_][A-Za-z0-9_.]{2,}", body))
with open(dict_path, "w", encoding="utf-8") as f:
    for w in sorted(words):
        f.write('"%s"\n' % w)
print(f"fuzz: {count} seeds from {len(files)} files, {len(words)} dictionary words")
PY

# Run. libFuzzer's log goes to a file (thousands of NEW lines); its end is printed.
log="$build/fuzz.log"
symbolizer="/usr/lib/llvm-$clang_version/bin/llvm-symbolizer"
export ASAN_SYMBOLIZER_PATH="$symbolizer" UBSAN_OPTIONS="print_stacktrace=1" ATTN_FUZZ_STATS=1
echo "fuzz: running $seconds s (log: $log)"
rc=0
"$fuzzer" "$build/corpus" "$seeds" -dict="$build/attn.dict" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=4096 \
  -artifact_prefix="$build/artifacts/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
grep -E "^(INFO: seed corpus|#[0-9]+[[:space:]]+(INITED|DONE))|^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)|^attn-fuzz-stats" "$log" || true

if [ "$rc" -ne 0 ]; then
  echo "fuzz: FAILED (libFuzzer exit $rc); the end of $log:" >&2
  tail -n 80 "$log" >&2
  artifact=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n 1 | sed 's/^Test unit written to //')
  if [ -n "$artifact" ]; then
    echo >&2
    echo "fuzz: reproducer: $artifact" >&2
    echo "fuzz: rerun:      $fuzzer $artifact" >&2
    echo "fuzz: minimize:   $fuzzer -minimize_crash=1 -runs=20000 -artifact_prefix=$build/artifacts/min- $artifact" >&2
    echo "fuzz: keep it as test/fuzz/regressions/NAME.mlir (a seed of every later run)" >&2
  fi
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
echo "fuzz: no finding in $seconds s ($(ls "$build/corpus" | wc -l) inputs in $build/corpus)"
echo "fuzz: 1 passed, 0 failed"
