// Mutation fuzzing of the example variants, in process: whatever the text, parsing,
// verification, canonicalization and legalization must end in diagnostics, never a crash.
#include "dialects/attn/AttnDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

using namespace mlir;

namespace {
std::vector<std::string> loadExamples() {
  std::vector<std::string> texts;
  for (const auto &entry : std::filesystem::directory_iterator(ATTN_EXAMPLES_DIR)) {
    if (entry.path().extension() != ".mlir")
      continue;
    auto buffer = llvm::MemoryBuffer::getFile(entry.path().string());
    if (buffer)
      texts.push_back((*buffer)->getBuffer().str());
  }
  return texts;
}

/// Tokens that tend to reach deep into the verifiers when spliced into valid IR.
const std::vector<std::string> kTokens = {
    "?", "0", "-1", "1", "3", "64", "x", "f16", "bf16", "i32", "index", "f64", "{causal}",
    "window = -2", "scale = 0.0 : f32", "#attn.custom", "#attn.relu<scale = -1.0>",
    "#attn.sigmoid<bias = 1e400>", "normalizer_body", "score_mod", "attn.yield", "^bb0(", ")",
    "(", "{", "}", "<", ">", ":", ",", "%q", "%arg0", "tensor<", "tensor<?x?x?x?xf32>",
    "bias(", "kv_lengths(", "attn.attention", "training", "gamma(", "u(", "\"", "\n"};

std::string mutate(const std::string &text, std::mt19937 &rng) {
  std::string result = text;
  int edits = 1 + static_cast<int>(rng() % 4);
  for (int edit = 0; edit < edits && !result.empty(); ++edit) {
    size_t position = rng() % result.size();
    size_t length = 1 + rng() % 12;
    switch (rng() % 5) {
    case 0: // delete a span
      result.erase(position, length);
      break;
    case 1: // insert a token
      result.insert(position, kTokens[rng() % kTokens.size()]);
      break;
    case 2: // replace a span with a token
      result.replace(position, length, kTokens[rng() % kTokens.size()]);
      break;
    case 3: { // duplicate a span elsewhere
      std::string span = result.substr(position, length);
      result.insert(rng() % result.size(), span);
      break;
    }
    default: // flip a digit
      for (size_t i = position; i < result.size(); ++i)
        if (std::isdigit(static_cast<unsigned char>(result[i]))) {
          result[i] = static_cast<char>('0' + rng() % 10);
          break;
        }
    }
  }
  return result;
}

TEST(ParserFuzz, MutatedExamplesNeverCrash) {
  std::vector<std::string> examples = loadExamples();
  ASSERT_GE(examples.size(), 5u) << "examples missing under " << ATTN_EXAMPLES_DIR;

  MLIRContext context;
  context.loadDialect<attn::AttnDialect, arith::ArithDialect, math::MathDialect,
                      func::FuncDialect, tensor::TensorDialect>();
  context.disableMultithreading();
  int diagnosticsSeen = 0;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &) {
    ++diagnosticsSeen;
    return success();
  });

  std::mt19937 rng(20261123);
  int parsed = 0, rejected = 0;
  constexpr int kMutants = 20000;
  for (int i = 0; i < kMutants; ++i) {
    std::string text = mutate(examples[i % examples.size()], rng);
    OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, &context);
    if (!module) {
      ++rejected;
      continue;
    }
    ++parsed;
    PassManager pm(&context);
    pm.addPass(createCanonicalizerPass());
    pm.addPass(attn::createAttnLegalize());
    (void)pm.run(*module);
  }
  // Both outcomes must occur, or the mutator is not exercising the parser and the verifiers.
  EXPECT_GT(parsed, kMutants / 20);
  EXPECT_GT(rejected, kMutants / 4);
  EXPECT_GE(diagnosticsSeen, rejected);
}

TEST(ParserFuzz, UnmutatedExamplesParse) {
  MLIRContext context;
  context.loadDialect<attn::AttnDialect, arith::ArithDialect, math::MathDialect,
                      func::FuncDialect>();
  for (const std::string &text : loadExamples()) {
    OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, &context);
    EXPECT_TRUE(module) << text;
  }
}
} // namespace
