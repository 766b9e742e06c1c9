// libFuzzer target: the bytes are MLIR text, taken through parse -> verify -> print/reparse ->
// canonicalize -> attn-legalize -> {attn-tile | attn-derive-backward, attn-tile |
// attn-tile-gpu}, with the verifier after every pass. Rejected input (parse errors, verifier
// errors, pass failures) is fine: only crashes, hangs, sanitizer reports and printed IR that does
// not parse again are findings. Built by scripts/fuzz.sh (build-fuzz/: clang, -DATTN_FUZZ=ON),
// which seeds the corpus from the lit tests and runs it for a fixed time.
#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

// Larger inputs only slow the search down (scripts/fuzz.sh also passes -max_len=4096).
constexpr size_t kMaxInputBytes = 4096;

// How far inputs get, printed at exit when ATTN_FUZZ_STATS is set (to see that the search
// reaches the passes and does not only explore parse errors).
enum Stage { kInputs, kVerified, kLegalized, kTiled, kBackward, kTiledGpu, kNumStages };
uint64_t stageCounts[kNumStages];

void printStats() {
  static const char *names[kNumStages] = {"inputs",    "parsed+verified", "legalized",
                                          "attn-tile", "derive-backward", "attn-tile-gpu"};
  for (int i = 0; i < kNumStages; ++i)
    llvm::errs() << "attn-fuzz-stats: " << names[i] << " " << stageCounts[i] << "\n";
}

// The dialects the attn lit tests and examples are written in, plus what our passes create.
// Not all of attn-opt's upstream dialects: their parsers and verifiers are upstream code, and
// registering them only spreads the search over IR our passes never see.
mlir::MLIRContext &context() {
  static mlir::MLIRContext *ctx = [] {
    mlir::DialectRegistry registry;
    registry
        .insert<mlir::attn::AttnDialect, mlir::arith::ArithDialect, mlir::func::FuncDialect,
                mlir::math::MathDialect, mlir::memref::MemRefDialect, mlir::scf::SCFDialect,
                mlir::tensor::TensorDialect, mlir::ub::UBDialect, mlir::vector::VectorDialect>();
    auto *c = new mlir::MLIRContext(registry, mlir::MLIRContext::Threading::DISABLED);
    c->loadAllAvailableDialects();
    // Diagnostics are the expected answer to bad input: swallow them (no printing, no abort).
    c->getDiagEngine().registerHandler([](mlir::Diagnostic &) { return mlir::success(); });
    if (std::getenv("ATTN_FUZZ_STATS"))
      std::atexit(printStats);
    return c;
  }();
  return *ctx;
}

void run(mlir::MLIRContext &ctx, mlir::ModuleOp module, Stage stage,
         llvm::ArrayRef<std::function<std::unique_ptr<mlir::Pass>()>> passes) {
  mlir::PassManager pm(&ctx, mlir::ModuleOp::getOperationName());
  pm.enableVerifier(true);
  for (const auto &pass : passes)
    pm.addPass(pass());
  if (mlir::succeeded(pm.run(module)))
    ++stageCounts[stage];
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > kMaxInputBytes)
    return -1; // not added to the corpus
  // ATTN_FUZZ_SKIP="a|b": inputs containing a or b are skipped, to search past a known finding
  // until it is fixed (exploration only; scripts/fuzz.sh and CI never set it).
  static const std::vector<std::string> skips = [] {
    std::vector<std::string> list;
    if (const char *env = std::getenv("ATTN_FUZZ_SKIP")) {
      llvm::SmallVector<llvm::StringRef> parts;
      llvm::StringRef(env).split(parts, '|', -1, /*KeepEmpty=*/false);
      for (llvm::StringRef part : parts)
        list.push_back(part.str());
    }
    return list;
  }();
  llvm::StringRef input(reinterpret_cast<const char *>(data), size);
  for (const std::string &skip : skips)
    if (input.contains(skip))
      return -1;

  mlir::MLIRContext &ctx = context();
  ++stageCounts[kInputs];
  // MLIR's lexer reads up to a terminating NUL (as files and mlir-opt's buffers have): parse a
  // NUL-terminated copy, never libFuzzer's buffer itself.
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(input, "fuzz-input"),
                               llvm::SMLoc());
  mlir::ParserConfig config(&ctx, /*verifyAfterParse=*/false);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr, config);
  if (!module || mlir::failed(mlir::verify(*module)))
    return 0;
  ++stageCounts[kVerified];

  // What verifies prints, and what is printed parses again (the custom printers of the attn
  // ops and attributes against their parsers): a failure here is a finding.
  {
    std::string printed;
    llvm::raw_string_ostream os(printed);
    module->print(os);
    mlir::OwningOpRef<mlir::ModuleOp> reparsed =
        mlir::parseSourceString<mlir::ModuleOp>(printed, config, "fuzz-printed");
    if (!reparsed || mlir::failed(mlir::verify(*reparsed))) {
      llvm::errs() << "attn-fuzz: the printed module does not parse and verify again:\n"
                   << printed << "\n";
      std::abort();
    }
  }

  {
    mlir::PassManager pm(&ctx, mlir::ModuleOp::getOperationName());
    pm.enableVerifier(true);
    pm.addPass(mlir::createCanonicalizerPass());
    pm.addPass(mlir::attn::createAttnLegalize());
    if (mlir::failed(pm.run(*module)))
      return 0;
  }
  ++stageCounts[kLegalized];

  // Each lowering on its own copy, so that one failing (e.g. attn-derive-backward on a region
  // it cannot differentiate) does not hide the others from the search: the forward; the
  // training pipeline (backward kernels, then the forward); the GPU kernels (sm_80 mma.sync or
  // sm_90a wgmma, chosen by the input's length, backward included).
  mlir::OwningOpRef<mlir::ModuleOp> backward(module->clone());
  mlir::OwningOpRef<mlir::ModuleOp> gpu(module->clone());
  run(ctx, *module, kTiled, {[] { return mlir::attn::createAttnTile(); }});
  // The training pipeline goes on as the CPU pipeline does (the forward's folded normalizers
  // included) through the CPU lowering of the tile IR (AVX-512 or AVX2 register blocks, chosen
  // by the input's length) and the polynomial math (with the AVX-512 forms for AVX-512).
  mlir::attn::AttnLowerTilesCpuOptions cpuOptions;
  cpuOptions.vectorWidth = size % 3 == 0 ? 8 : 16;
  cpuOptions.vectorRegisters = cpuOptions.vectorWidth == 8 ? 16 : 32;
  mlir::attn::AttnTileOptions tileOptions;
  tileOptions.foldNormalizer = true;
  run(ctx, *backward, kBackward,
      {[] { return mlir::attn::createAttnDeriveBackward(); },
       [&] { return mlir::attn::createAttnTile(tileOptions); },
       [&] { return mlir::attn::createAttnLowerTilesCpu(cpuOptions); },
       [&] {
         return mlir::attn::createAttnCpuFastMath(
             mlir::attn::AttnCpuFastMathOptions{/*avx512=*/cpuOptions.vectorWidth == 16});
       }});
  mlir::attn::AttnTileGpuOptions gpuOptions;
  gpuOptions.backward = true;
  gpuOptions.wgmma = size % 2;
  run(ctx, *gpu, kTiledGpu, {[&] { return mlir::attn::createAttnTileGpu(gpuOptions); }});
  return 0;
}

// A mutator that keeps the text parseable more often than libFuzzer's byte mutations (of
// which fewer than 1 in 200 still parse and verify): half of the mutations replace a number
// (a dimension, a window, a constant) by an edge value, or a token by another of its kind
// (element type, normalizer, arith/math op of the same arity, mask flag); the other half are
// libFuzzer's own.
extern "C" size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t maxSize);

namespace {

bool isWordChar(uint8_t c) { return std::isalnum(c) || c == '_' || c == '.' || c == '#'; }

// Replaces the span `spans[pick]` by `with`, or (one time in two) every span with the same
// text: a dimension or an element type is usually spelled in several types that must agree.
size_t replaceSpans(uint8_t *data, size_t size, size_t maxSize,
                    llvm::ArrayRef<std::pair<size_t, size_t>> spans, std::minstd_rand &rng,
                    llvm::StringRef with) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  auto [pickBegin, pickEnd] = spans[rng() % spans.size()];
  llvm::StringRef picked = text.slice(pickBegin, pickEnd);
  bool all = rng() % 2;
  std::string out;
  size_t last = 0;
  for (auto [begin, end] : spans) {
    if (begin < last || (all ? text.slice(begin, end) != picked : begin != pickBegin))
      continue;
    out.append(text.slice(last, begin).str()).append(with.str());
    last = end;
  }
  out.append(text.substr(last).str());
  if (out.size() > maxSize)
    return 0;
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

size_t mutateNumber(uint8_t *data, size_t size, size_t maxSize, std::minstd_rand &rng) {
  static const llvm::SmallVector<llvm::StringRef> values = [] {
    llvm::SmallVector<llvm::StringRef> list;
    llvm::StringRef("0 1 2 3 7 8 15 16 17 31 32 33 63 64 65 127 128 256 4096 65536 -1 -2 ? 0.0 "
                    "-0.0 1.0e38 -1.0e38 1.0e-45 2147483647 2147483648 9223372036854775807 "
                    "0x7FC00000 0xFF800000")
        .split(list, ' ');
    return list;
  }();
  // Digit runs that stand alone or are dimensions ("4x64"): not parts of names like f32, %s2.
  llvm::SmallVector<std::pair<size_t, size_t>> runs;
  for (size_t i = 0; i < size;) {
    if (!std::isdigit(data[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < size && (std::isdigit(data[j]) || data[j] == '.' || data[j] == 'e'))
      ++j;
    uint8_t before = i ? data[i - 1] : ' ';
    bool dimension = before == 'x' && i >= 2 && (std::isdigit(data[i - 2]) || data[i - 2] == '?');
    if (dimension || (!isWordChar(before) && before != '%' && before != '^' && before != '@'))
      runs.push_back({before == '-' ? i - 1 : i, j});
    i = j;
  }
  if (runs.empty())
    return 0;
  return replaceSpans(data, size, maxSize, runs, rng, values[rng() % values.size()]);
}

size_t mutateToken(uint8_t *data, size_t size, size_t maxSize, std::minstd_rand &rng) {
  static const std::vector<std::vector<llvm::StringRef>> groups = {
      {"f32", "f16", "bf16", "f64", "i32", "i64", "i1", "index"},
      {"#attn.softmax", "#attn.sigmoid", "#attn.relu", "#attn.custom", "#attn.sigmoid<bias = 0.0>",
       "#attn.relu<scale = 0.5>"},
      {"arith.addf", "arith.subf", "arith.mulf", "arith.divf", "arith.maximumf", "arith.minimumf",
       "arith.remf", "math.powf", "math.atan2", "math.copysign"},
      {"math.exp", "math.exp2", "math.tanh", "math.log", "math.log2", "math.sqrt", "math.rsqrt",
       "math.absf", "arith.negf", "math.floor", "math.erf", "math.sin"},
      {"causal", "window = 0", "window = 1", "window = -1", "causal, window = 2",
       "scale = 0.0 : f32", "scale = -1.0 : f32"},
      {"%q", "%k", "%v", "%b", "%len", "%o", "%s"},
      {"bias(", "kv_lengths("},
      {"tensor<", "memref<", "vector<"}};
  const auto &group = groups[rng() % groups.size()];
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  llvm::SmallVector<std::pair<size_t, size_t>> hits;
  for (llvm::StringRef token : group)
    for (size_t at = text.find(token); at != llvm::StringRef::npos; at = text.find(token, at + 1)) {
      size_t end = at + token.size();
      if (end < size && isWordChar(data[end]) && std::isalnum(token.back()))
        continue; // a prefix of a longer word (math.exp in math.exp2, %s in %s2)
      if (at > 0 && std::isalnum(data[at - 1]) && data[at - 1] != 'x')
        continue; // inside a longer word (f16 in bf16), not an element type (64xf16)
      hits.push_back({at, end});
    }
  if (hits.empty())
    return 0;
  llvm::sort(hits);
  return replaceSpans(data, size, maxSize, hits, rng, group[rng() % group.size()]);
}

} // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t maxSize,
                                          unsigned int seed) {
  std::minstd_rand rng(seed);
  if (rng() % 2) {
    size_t newSize =
        rng() % 2 ? mutateNumber(data, size, maxSize, rng) : mutateToken(data, size, maxSize, rng);
    if (newSize) // 0: nothing to replace, or no room
      return newSize;
  }
  return LLVMFuzzerMutate(data, size, maxSize);
}
