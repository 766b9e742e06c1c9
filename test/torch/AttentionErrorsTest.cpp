// Bad arguments to the op are c10::Errors whose messages say what was expected.
#include "frontend/torch/Attention.h"
#include "test/torch/NumericsSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <functional>

namespace attn {
namespace {

using testing::AllOf;
using testing::HasSubstr;

/// The message of the c10::Error that `call` throws, or a note that it threw none.
std::string errorMessageOf(const std::function<void()> &call) {
  try {
    call();
  } catch (const c10::Error &error) {
    return error.what_without_backtrace();
  }
  return "<no c10::Error thrown>";
}

at::Tensor tensor(at::IntArrayRef sizes, at::ScalarType dtype = at::kFloat) {
  return at::randn(sizes, at::TensorOptions().dtype(dtype));
}

TEST(AttentionErrors, WrongRank) {
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({4, 8, 32}), tensor({1, 4, 8, 32}), tensor({1, 4, 8, 32}));
              }),
              HasSubstr("q must be [B, Hq, Sq, D] (rank 4), got rank 3"));
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({1, 4, 8, 32}), tensor({1, 4, 8, 32}), tensor({1, 1, 4, 8, 32}));
              }),
              HasSubstr("v must be [B, Hkv, Sk, Dv] (rank 4), got rank 5"));
}

TEST(AttentionErrors, DtypeMismatch) {
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({1, 4, 8, 32}), tensor({1, 4, 8, 32}, at::kHalf),
                          tensor({1, 4, 8, 32}));
              }),
              AllOf(HasSubstr("one dtype"), HasSubstr("Float"), HasSubstr("Half")));
}

TEST(AttentionErrors, IntegerDtype) {
  EXPECT_THAT(errorMessageOf([] {
                const at::Tensor x = at::ones({1, 4, 8, 32}, at::kInt);
                attention(x, x, x);
              }),
              HasSubstr("expected float32, bfloat16, float16 or float64 tensors, got Int"));
}

TEST(AttentionErrors, DeviceMismatch) {
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({1, 4, 8, 32}), at::empty({1, 4, 8, 32}, at::kMeta),
                          tensor({1, 4, 8, 32}));
              }),
              HasSubstr("one device"));
}

// Meta tensors (torch.compile's fake tensors) get shapes and dtypes, with the same checks.
TEST(AttentionErrors, MetaTensorsGiveShapesAndKeepTheChecks) {
  const at::Tensor q = at::empty({2, 4, 9, 32}, at::TensorOptions(at::kMeta).dtype(at::kHalf));
  const at::Tensor kv = at::empty({2, 2, 5, 32}, at::TensorOptions(at::kMeta).dtype(at::kHalf));
  const at::Tensor out = attention(q, kv, kv);
  EXPECT_TRUE(out.is_meta());
  EXPECT_EQ(out.sizes(), at::IntArrayRef({2, 4, 9, 32}));
  EXPECT_EQ(out.scalar_type(), at::kHalf);
  EXPECT_THAT(errorMessageOf([&] { attention(q, kv.narrow(1, 0, 1).expand({2, 3, 5, 32}), kv); }),
              HasSubstr("k and v must have the same number of heads"));
}

TEST(AttentionErrors, ShapeMismatches) {
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({2, 4, 8, 32}), tensor({1, 4, 8, 32}), tensor({1, 4, 8, 32}));
              }),
              HasSubstr("one batch size B, got 2, 1 and 1"));
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({1, 4, 8, 32}), tensor({1, 4, 8, 32}), tensor({1, 2, 8, 32}));
              }),
              HasSubstr("k and v must have the same number of heads Hkv, got 4 and 2"));
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({1, 3, 8, 32}), tensor({1, 2, 8, 32}), tensor({1, 2, 8, 32}));
              }),
              HasSubstr("the query heads Hq = 3 must be a multiple of the key/value heads Hkv = 2"));
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({1, 4, 8, 32}), tensor({1, 4, 9, 32}), tensor({1, 4, 8, 32}));
              }),
              HasSubstr("k and v must have the same length Sk, got 9 and 8"));
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({1, 4, 8, 32}), tensor({1, 4, 8, 64}), tensor({1, 4, 8, 32}));
              }),
              HasSubstr("q and k must have the same head dim D, got 32 and 64"));
  EXPECT_THAT(errorMessageOf([] {
                attention(tensor({1, 4, 8, 32}), tensor({1, 4, 8, 32}), tensor({1, 4, 8, 0}));
              }),
              HasSubstr("head dims must be non-empty, got D = 32 and Dv = 0"));
}

TEST(AttentionErrors, NonPositiveScale) {
  EXPECT_THAT(errorMessageOf([] {
                const at::Tensor x = tensor({1, 4, 8, 32});
                attention(x, x, x, {"softmax", -0.5, false});
              }),
              HasSubstr("scale must be > 0, got -0.5"));
}

TEST(AttentionErrors, UnknownVariantIsNamed) {
  EXPECT_THAT(errorMessageOf([] {
                const at::Tensor x = tensor({1, 4, 8, 32});
                attention(x, x, x, {"softmx", std::nullopt, false});
              }),
              HasSubstr("softmx"));
}

TEST(AttentionErrors, UnparsableIr) {
  EXPECT_THAT(errorMessageOf([] {
                const at::Tensor x = tensor({1, 4, 8, 32});
                attention(x, x, x, {"mlir: func.func @f( this is not IR", std::nullopt, false});
              }),
              HasSubstr("IR"));
}

TEST(AttentionErrors, IrHeadDimUnlikeInputs) {
  EXPECT_THAT(errorMessageOf([] {
                const at::Tensor x = tensor({1, 4, 8, 32});
                const std::string ir = test::variantText(test::Variant::CustomHalfTanh, 64, 64);
                attention(x, x, x, {ir, std::nullopt, false});
              }),
              AllOf(HasSubstr("64"), HasSubstr("32")));
}

} // namespace
} // namespace attn
