// The GPU backend's MLIR-free API: the tuning table, compileAttentionToPtx's launch contract
// and errors, the PassManager hook, and ptxas assembly when a CUDA toolkit is installed.
#include "codegen/GpuCompiler.h"

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassInstrumentation.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

using namespace attn::codegen;

namespace {
std::string attentionModule(const std::string &normalizer, int64_t headDim, bool causal) {
  std::string type = "tensor<?x?x?x" + std::to_string(headDim) + "xf32>";
  return "func.func @attention(%q: " + type + ", %k: " + type + ", %v: " + type + ") -> " +
         type + " {\n  %o = attn.attention %q, %k, %v normalizer(" + normalizer + ")" +
         (causal ? " {causal}" : "") + " : " + type + ", " + type + ", " + type + " -> " +
         type + "\n  return %o : " + type + "\n}\n";
}

const GpuKernelInfo *findKernel(const GpuProgram &program, const std::string &name) {
  auto found = std::find_if(program.kernels.begin(), program.kernels.end(),
                            [&](const GpuKernelInfo &kernel) { return kernel.name == name; });
  return found == program.kernels.end() ? nullptr : &*found;
}
} // namespace

TEST(GpuTuning, TableEntriesPerTargetAndHeadDim) {
  auto sm80 = lookupGpuTiles(GpuTarget::Sm80, 64, 64);
  ASSERT_TRUE(sm80);
  EXPECT_EQ(sm80->warps, 4);
  EXPECT_EQ(sm80->keyTile, 64);
  EXPECT_EQ(sm80->stages, 3);
  auto sm90 = lookupGpuTiles(GpuTarget::Sm90a, 128, 128);
  ASSERT_TRUE(sm90);
  EXPECT_EQ(sm90->warps, 8);
  EXPECT_EQ(sm90->stages, 3);
}

TEST(GpuTuning, UnsupportedHeadDims) {
  EXPECT_FALSE(lookupGpuTiles(GpuTarget::Sm80, 40, 40));   // not a multiple of 16
  EXPECT_FALSE(lookupGpuTiles(GpuTarget::Sm90a, 256, 256)); // accumulators would spill
  EXPECT_FALSE(lookupGpuTiles(GpuTarget::Sm80, 64, 8));
}

TEST(GpuTuning, WarpsShrinkUntilCopiesSplitEvenly) {
  // 16-wide heads: a 64x16 tile is 128 copies, too few for 256 threads.
  auto tiles = lookupGpuTiles(GpuTarget::Sm90a, 16, 16);
  ASSERT_TRUE(tiles);
  EXPECT_LE(tiles->warps * 32, 64 * 16 / 8);
}

TEST(GpuTuning, TargetNames) {
  EXPECT_EQ(parseGpuTarget("sm_80"), GpuTarget::Sm80);
  EXPECT_EQ(parseGpuTarget("sm_90a"), GpuTarget::Sm90a);
  EXPECT_FALSE(parseGpuTarget("sm_90"));
  EXPECT_STREQ(gpuChip(GpuTarget::Sm90a), "sm_90a");
  EXPECT_GT(gpuSharedMemoryLimit(GpuTarget::Sm90a), gpuSharedMemoryLimit(GpuTarget::Sm80));
}

TEST(GpuCompiler, SoftmaxLaunchContract) {
  GpuCompileOptions options;
  options.target = GpuTarget::Sm80;
  GpuProgram program = compileAttentionToPtx(attentionModule("#attn.softmax", 64, true), options);
  EXPECT_TRUE(program.rowWise);
  EXPECT_NE(program.ptx.find(".target sm_80"), std::string::npos);
  EXPECT_NE(program.ptx.find("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"),
            std::string::npos);
  const GpuKernelInfo *forward = findKernel(program, "attention_fwd");
  ASSERT_NE(forward, nullptr);
  EXPECT_EQ(forward->grid, "query_blocks,query_heads,batch");
  EXPECT_EQ(forward->blockRows, 16 * program.tiles.warps);
  EXPECT_EQ(forward->threads, 32 * program.tiles.warps);
  // Q tile + stages x (K + V) blocks, bf16.
  EXPECT_EQ(forward->dynamicSharedBytes,
            2 * 64 * (forward->blockRows + 2 * program.tiles.stages * program.tiles.keyTile));
  const GpuKernelInfo *keyValue = findKernel(program, "attention_bwd_dkdv");
  ASSERT_NE(keyValue, nullptr);
  EXPECT_EQ(keyValue->grid, "key_blocks,kv_heads,batch");
  EXPECT_NE(findKernel(program, "attention_bwd_dq"), nullptr);
  EXPECT_NE(findKernel(program, "attention_bwd_delta"), nullptr);
}

TEST(GpuCompiler, SigmoidNeedsNoStatistics) {
  GpuCompileOptions options;
  options.target = GpuTarget::Sm90a;
  options.dtype = "f16";
  GpuProgram program = compileAttentionToPtx(
      attentionModule("#attn.sigmoid<bias = -3.0>", 128, false), options);
  EXPECT_FALSE(program.rowWise);
  EXPECT_EQ(findKernel(program, "attention_bwd_delta"), nullptr);
  EXPECT_NE(program.ptx.find("tanh.approx.f32"), std::string::npos);
  EXPECT_EQ(program.ptx.find("shfl.sync"), std::string::npos);
  EXPECT_NE(program.ptx.find("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"),
            std::string::npos);
}

TEST(GpuCompiler, ForwardOnly) {
  GpuCompileOptions options;
  options.backward = false;
  GpuProgram program = compileAttentionToPtx(attentionModule("#attn.relu", 64, false), options);
  ASSERT_EQ(program.kernels.size(), 1u);
  EXPECT_EQ(program.kernels[0].name, "attention_fwd");
}

TEST(GpuCompiler, ErrorsAreExceptions) {
  GpuCompileOptions options;
  EXPECT_THROW(compileAttentionToPtx("func.func @f(", options), GpuCompileError);
  EXPECT_THROW(compileAttentionToPtx("func.func @f() { return }", options), GpuCompileError);
  EXPECT_THROW(compileAttentionToPtx(attentionModule("#attn.softmax", 40, false), options),
               GpuCompileError);
  options.dtype = "f32";
  EXPECT_THROW(compileAttentionToPtx(attentionModule("#attn.softmax", 64, false), options),
               GpuCompileError);
}

/// Records the argument of every pass that runs, prefixed with its pass manager's stage.
struct PassRecorder : mlir::PassInstrumentation {
  PassRecorder(std::vector<std::string> &passes, std::string stage)
      : passes(passes), stage(std::move(stage)) {}
  void runAfterPass(mlir::Pass *pass, mlir::Operation *) override {
    passes.push_back(stage + ":" + pass->getArgument().str());
  }
  std::vector<std::string> &passes;
  std::string stage;
};

TEST(GpuCompiler, HookConfiguresEveryPassManager) {
  std::vector<std::string> stages, passes;
  GpuCompileOptions options;
  options.target = GpuTarget::Sm80;
  options.backward = false;
  options.configurePassManager = [&](mlir::PassManager &pm, const std::string &stage) {
    stages.push_back(stage);
    pm.addInstrumentation(std::make_unique<PassRecorder>(passes, stage));
  };
  GpuProgram program = compileAttentionToPtx(attentionModule("#attn.softmax", 64, false), options);
  EXPECT_FALSE(program.ptx.empty());
  EXPECT_EQ(stages, (std::vector<std::string>{"kernels", "nvvm", "ptx"}));
  // Every pass of every stage ran under the hook's instrumentation, in pipeline order.
  std::vector<std::string> expected = {
      "kernels:attn-legalize",   "kernels:attn-tile-gpu",    "nvvm:convert-nvgpu-to-nvvm",
      "nvvm:nvvm-attach-target", "nvvm:convert-gpu-to-nvvm", "nvvm:reconcile-unrealized-casts",
      "ptx:gpu-module-to-binary"};
  auto next = passes.begin();
  for (const std::string &pass : expected) {
    next = std::find(next, passes.end(), pass);
    EXPECT_NE(next, passes.end()) << pass << " missing or out of order";
  }
  EXPECT_EQ(passes.back(), "ptx:gpu-module-to-binary");
}

TEST(GpuCompiler, HookExceptionsPropagate) {
  GpuCompileOptions options;
  options.backward = false;
  options.configurePassManager = [](mlir::PassManager &, const std::string &stage) {
    if (stage == "nvvm")
      throw GpuCompileError("hook refused " + stage);
  };
  try {
    compileAttentionToPtx(attentionModule("#attn.relu", 64, false), options);
    FAIL() << "the hook's exception was swallowed";
  } catch (const GpuCompileError &error) {
    EXPECT_STREQ(error.what(), "hook refused nvvm");
  }
}

TEST(GpuCompiler, AssemblesWithPtxas) {
  if (!findPtxas())
    GTEST_SKIP() << "no ptxas";
  GpuCompileOptions options;
  options.target = GpuTarget::Sm90a;
  options.backward = false;
  GpuProgram program = compileAttentionToPtx(attentionModule("#attn.softmax", 64, false), options);
  std::string log;
  std::string cubin = assembleCubin(program.ptx, options.target, &log);
  EXPECT_GT(cubin.size(), 1000u);
  EXPECT_EQ(cubin.compare(0, 4, "\x7f" "ELF"), 0);
  EXPECT_NE(log.find("0 bytes spill stores"), std::string::npos);
}
