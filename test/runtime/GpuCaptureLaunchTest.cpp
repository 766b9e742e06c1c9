// Captured tensors through the GPU launcher, against the stand-in libcuda with real PTX from
// the GPU pipeline: the kernels take each capture's expanded memref descriptor after the views
// and key lengths, in the op's `captures` order, then the fault flags; a call zeroes the flags
// on its stream, reads them back after its kernels and fails with a CallError naming the
// capture a region read outside of; captures that do not fit the IR fail before any launch.
#include "test/runtime/StandInDriver.h"

#include <vector>

namespace attn::runtime {
namespace {
using namespace standin;

// The call passes %table then %docs; the op captures %docs then %table, so the kernels take
// them in that order (call captures 1, 0), then the fault flags (one i32 per kernel capture).
const char *kCapturesVariant = R"(mlir:
func.func @f(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>,
             %table: tensor<?x16xf32>, %docs: tensor<?x?xi32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v captures(%docs, %table : tensor<?x?xi32>, tensor<?x16xf32>)
      normalizer(#attn.softmax)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>, %t: tensor<?x16xf32>):
    %c15 = arith.constant 15 : index
    %at = arith.remui %j, %c15 : index
    %bias = tensor.extract %t[%h, %at] : tensor<?x16xf32>
    %r = arith.addf %s, %bias : f32
    attn.yield %r : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>, %t: tensor<?x16xf32>):
    %di = tensor.extract %d[%b, %i] : tensor<?x?xi32>
    %dj = tensor.extract %d[%b, %j] : tensor<?x?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1
  }
  return %o : tensor<?x?x?x64xf32>
})";

VariantSpec capturesSpec() {
  VariantSpec result = spec(kCapturesVariant, 64);
  result.captures = {{2, true, "a float32 tensor of shape [8, 16]"},
                     {2, false, "an int32 tensor of shape [3, 200]"}};
  return result;
}

/// The call's captures: made-up device addresses (never dereferenced by the stand-in) and
/// real host memory as the fault-flag scratch, which the stand-in zeroes, sets and copies.
struct CallCaptures {
  std::vector<int64_t> scratch = std::vector<int64_t>(4, -1);
  DeviceCaptures captures;
  explicit CallCaptures(const Problem &p, int64_t tableRows = 8, int64_t tableWidth = 16) {
    captures.views = {{reinterpret_cast<void *>(0xc0000), {tableRows, tableWidth}},
                      {reinterpret_cast<void *>(0xd0000), {p.batch, p.queries}}};
    captures.scratch = scratch.data();
  }
};

/// The memref descriptor at parameter `at` of a launch: {allocated, aligned, offset, sizes...,
/// strides...}.
std::vector<int64_t> descriptorAt(const FakeLaunch &launch, int at, int rank) {
  return std::vector<int64_t>(launch.parameters + at, launch.parameters + at + 3 + 2 * rank);
}

int64_t address(const void *pointer) {
  return static_cast<int64_t>(reinterpret_cast<intptr_t>(pointer));
}

TEST(GpuLaunch, CapturesFollowTheViewsInTheOpsOrderThenTheFaultFlags) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(capturesSpec(), GpuDtype::BFloat16, 0);
  ASSERT_EQ(kernels->captures().size(), 2u);
  EXPECT_EQ(kernels->captures()[0].type, "tensor<?x16xf32>");
  EXPECT_EQ(kernels->captureScratchBytes(), 8u) << "two int32 flags";
  Problem p;
  CallCaptures call(p);
  fake.reset();
  kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, nullptr, &call.captures);
  ASSERT_EQ(fake.launchCount(), 1);
  const FakeLaunch &forward = *fake.launch(0);
  const int views = 4 * 11 + 9;
  ASSERT_EQ(forward.parameterCount, views + 7 + 7 + 5);
  const int64_t docs = 0xd0000, table = 0xc0000, flags = address(call.scratch.data());
  EXPECT_EQ(descriptorAt(forward, views, 2),
            (std::vector<int64_t>{docs, docs, 0, p.batch, p.queries, p.queries, 1}))
      << "kernel capture 0 is the op's first capture, %docs (the call's capture 1)";
  EXPECT_EQ(descriptorAt(forward, views + 7, 2),
            (std::vector<int64_t>{table, table, 0, 8, 16, 16, 1}));
  EXPECT_EQ(descriptorAt(forward, views + 14, 1), (std::vector<int64_t>{flags, flags, 0, 2, 1}));
  EXPECT_EQ(fake.memsetCount(), 1) << "the flags are zeroed before the kernels";
  EXPECT_EQ(fake.copyCount(), 1) << "and read back after them";
  EXPECT_EQ(fake.synchronizeCount(), 1);
  EXPECT_EQ(call.scratch[0], 0) << "the stand-in's memset zeroed both flags";

  // The backward's dQ and dK/dV kernels take the same captures; one zeroing, one read-back.
  fake.reset();
  kernels->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery, p.gradKey,
                    p.gradValue, nullptr, nullptr, &call.captures);
  ASSERT_EQ(fake.launchCount(), 3);
  for (int i : {1, 2}) {
    const FakeLaunch &launch = *fake.launch(i);
    const int at = launch.parameterCount - 19;
    EXPECT_EQ(at, (i == 1 ? 5 : 6) * 11 + 2 * 9) << nameOf(launch);
    EXPECT_EQ(launch.parameters[at + 1], docs) << nameOf(launch);
    EXPECT_EQ(launch.parameters[at + 8], table) << nameOf(launch);
    EXPECT_EQ(launch.parameters[at + 15], flags) << nameOf(launch);
  }
  EXPECT_EQ(fake.launch(0)->parameterCount, 2 * 11 + 9) << "bwd_delta reads no capture";
  EXPECT_EQ(fake.memsetCount(), 1);
  EXPECT_EQ(fake.copyCount(), 1);
}

// With key lengths the kernels take them between the views and the captures (the CPU's order).
TEST(GpuLaunch, KeyLengthsComeBeforeTheCaptures) {
  FakeDriver &fake = FakeDriver::get();
  VariantSpec ragged = capturesSpec();
  ragged.keyLengths = true;
  auto kernels = getGpuKernels(ragged, GpuDtype::BFloat16, 0);
  Problem p;
  CallCaptures call(p);
  DeviceLengths lengths = view<1>(0xb0000, {p.batch});
  fake.reset();
  kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, &lengths, &call.captures);
  ASSERT_EQ(fake.launchCount(), 1);
  const FakeLaunch &forward = *fake.launch(0);
  const int views = 4 * 11 + 9;
  ASSERT_EQ(forward.parameterCount, views + 5 + 7 + 7 + 5);
  EXPECT_EQ(descriptorAt(forward, views, 1), (std::vector<int64_t>{0xb0000, 0xb0000, 0, 3, 1}));
  EXPECT_EQ(forward.parameters[views + 5 + 1], 0xd0000) << "then %docs";
  EXPECT_EQ(forward.parameters[views + 5 + 14 + 1], address(call.scratch.data()))
      << "then the fault flags";
}

TEST(GpuLaunch, AFaultFlagReadBackIsACallErrorNamingTheCapture) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(capturesSpec(), GpuDtype::BFloat16, 0);
  Problem p;
  CallCaptures call(p);
  fake.reset();
  fake.setFault("_fwd", 0); // kernel capture 0: %docs, the call's capture 1
  try {
    kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, nullptr, &call.captures);
    FAIL() << "a flagged fault returned a result";
  } catch (const CallError &error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("outside capture 1"), std::string::npos) << message;
    EXPECT_NE(message.find("tensor<?x?xi32>"), std::string::npos) << message;
    EXPECT_NE(message.find("[3, 200]"), std::string::npos) << message;
  }
  // The backward reads the flags after dK/dV too; a fault in the table names capture 0.
  fake.reset();
  fake.setFault("_bwd_dkdv", 1);
  try {
    kernels->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery, p.gradKey,
                      p.gradValue, nullptr, nullptr, &call.captures);
    FAIL() << "a flagged fault returned gradients";
  } catch (const CallError &error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("outside capture 0"), std::string::npos) << message;
    EXPECT_NE(message.find("tensor<?x16xf32>"), std::string::npos) << message;
  }
  // Flags are zeroed per call: the next call without a fault succeeds.
  fake.reset();
  kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, nullptr, &call.captures);
  EXPECT_EQ(fake.launchCount(), 1);
}

TEST(GpuLaunch, CapturesThatDoNotFitAreCallErrorsBeforeAnyLaunch) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(capturesSpec(), GpuDtype::BFloat16, 0);
  Problem p;
  fake.reset();
  auto messageOf = [&](const DeviceCaptures *captures) -> std::string {
    try {
      kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, nullptr, captures);
    } catch (const CallError &error) {
      return error.what();
    }
    return "(no CallError)";
  };
  CallCaptures wrongWidth(p, 8, 15);
  std::string message = messageOf(&wrongWidth.captures);
  EXPECT_NE(message.find("capture 0 has shape [8, 15]"), std::string::npos) << message;
  EXPECT_NE(message.find("tensor<?x16xf32>"), std::string::npos) << message;
  message = messageOf(nullptr);
  EXPECT_NE(message.find("take 2 captured tensors, the call passes 0"), std::string::npos)
      << message;
  CallCaptures noScratch(p);
  noScratch.captures.scratch = nullptr;
  message = messageOf(&noScratch.captures);
  EXPECT_NE(message.find("scratch"), std::string::npos) << message;
  auto plain = getGpuKernels(spec("softmax", 64), GpuDtype::BFloat16, 0);
  CallCaptures extra(p);
  EXPECT_THROW(plain->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, nullptr, &extra.captures),
               CallError);
  EXPECT_EQ(fake.launchCount(), 0) << "nothing may launch with captures that do not fit";
  EXPECT_EQ(fake.memsetCount(), 0);
}

TEST(GpuLaunch, AnEmptyCapturePointsAtTheScratch) {
  FakeDriver &fake = FakeDriver::get();
  auto kernels = getGpuKernels(capturesSpec(), GpuDtype::BFloat16, 0);
  Problem p;
  CallCaptures call(p, 0, 16);
  fake.reset();
  kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, nullptr, &call.captures);
  ASSERT_EQ(fake.launchCount(), 1);
  const FakeLaunch &forward = *fake.launch(0);
  EXPECT_EQ(descriptorAt(forward, 4 * 11 + 9 + 7, 2)[1], address(call.scratch.data()))
      << "an empty capture's in-bounds fallback read must stay in device memory";
}

// With capture gradients the dQ kernel also takes the f32 captures' gradient buffers (the
// table's, of its shape), after the fault flags; the dK/dV kernel does not.
TEST(GpuLaunch, CaptureGradientBuffersFollowTheFaultFlagsInTheDqKernel) {
  FakeDriver &fake = FakeDriver::get();
  VariantSpec gradients = capturesSpec();
  gradients.captureGradients = true;
  auto kernels = getGpuKernels(gradients, GpuDtype::BFloat16, 0);
  Problem p;
  CallCaptures call(p);
  fake.reset();
  EXPECT_THROW(kernels->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery,
                                 p.gradKey, p.gradValue, nullptr, nullptr, &call.captures),
               CallError)
      << "no gradient buffers";
  EXPECT_EQ(fake.launchCount(), 0);
  call.captures.gradients = {{reinterpret_cast<void *>(0xe0000), {8, 16}},
                             {nullptr, {p.batch, p.queries}}};
  kernels->backward(p.q, p.k, p.v, p.o, p.gradOut, p.lse, p.delta, p.gradQuery, p.gradKey,
                    p.gradValue, nullptr, nullptr, &call.captures);
  ASSERT_EQ(fake.launchCount(), 3);
  const FakeLaunch &query = *fake.launch(1);
  EXPECT_EQ(query.parameterCount, 5 * 11 + 2 * 9 + 19 + 7) << nameOf(query);
  EXPECT_EQ(descriptorAt(query, query.parameterCount - 7, 2),
            (std::vector<int64_t>{0xe0000, 0xe0000, 0, 8, 16, 16, 1}))
      << "the table's gradient, contiguous, after the flags";
  const FakeLaunch &key = *fake.launch(2);
  EXPECT_EQ(key.parameterCount, 6 * 11 + 2 * 9 + 19) << nameOf(key);
  // The forward takes no gradient buffer.
  fake.reset();
  kernels->forward(p.q, p.k, p.v, p.o, p.lse, nullptr, nullptr, &call.captures);
  ASSERT_EQ(fake.launchCount(), 1);
  EXPECT_EQ(fake.launch(0)->parameterCount, 4 * 11 + 9 + 19);
}
} // namespace
} // namespace attn::runtime
