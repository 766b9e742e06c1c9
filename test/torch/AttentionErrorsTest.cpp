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

TEST(AttentionErrors, EveryDialectNormalizerIsCallableByName) {
  // The list comes from the dialect's definitions: a normalizer added there is covered here.
  const std::vector<std::string> names = normalizer_names();
  EXPECT_THAT(names, testing::IsSupersetOf({"softmax", "sigmoid", "relu"}));
  const at::Tensor q = tensor({1, 2, 5, 16}), k = tensor({1, 2, 7, 16}), v = tensor({1, 2, 7, 16});
  for (const std::string &name : names) {
    const at::Tensor out = attention(q, k, v, {name, std::nullopt, false});
    EXPECT_TRUE(out.isfinite().all().item<bool>()) << name;
    EXPECT_EQ(normalizer_info(name).name, name);
  }
  const NormalizerInfo info = normalizer_info("sigmoid( bias = -2 )");
  EXPECT_EQ(info.attribute, "#attn.sigmoid<bias = -2.000000e+00>");
  ASSERT_EQ(info.parameters.size(), 1u);
  EXPECT_EQ(info.parameters.front().first, "bias");
  EXPECT_THAT(errorMessageOf([] { normalizer_info("sigmiod"); }),
              HasSubstr("did you mean 'sigmoid'"));
}

TEST(AttentionErrors, IrWhoseFunctionDoesMoreThanAttentionIsRejected) {
  // The kernels replace the variant's function: an op around attn.attention would be dropped.
  const std::string t = "tensor<?x?x?x16xf32>";
  const std::string ir = "mlir:func.func @f(%q: " + t + ", %k: " + t + ", %v: " + t + ") -> " +
                         t + " {\n  %q2 = arith.addf %q, %q : " + t +
                         "\n  %o = attn.attention %q2, %k, %v normalizer(#attn.softmax) : " + t +
                         ", " + t + ", " + t + " -> " + t + "\n  return %o : " + t + "\n}";
  const at::Tensor x = tensor({1, 2, 8, 16});
  EXPECT_THAT(errorMessageOf([&] { attention(x, x, x, {ir, std::nullopt, false}); }),
              HasSubstr("may only pass its arguments to it and return its result, found "
                        "'arith.addf'"));
}

/// ALiBi with per-head slopes read from a captured [H] tensor.
std::string alibiSlopesVariant() {
  const std::string t = "tensor<?x?x?x16xf32>";
  return "mlir:func.func @f(%q: " + t + ", %k: " + t + ", %v: " + t +
         ", %slopes: tensor<?xf32>) -> " + t +
         " {\n  %o = attn.attention %q, %k, %v captures(%slopes : tensor<?xf32>) "
         "normalizer(#attn.softmax) : " + t + ", " + t + ", " + t + " -> " + t +
         "\n  score_mod {\n  ^bb0(%s: f32, %b: index, %h: index, %i: index, %j: index, "
         "%m: tensor<?xf32>):\n"
         "    %slope = tensor.extract %m[%h] : tensor<?xf32>\n"
         "    %d = arith.subi %i, %j : index\n"
         "    %di = arith.index_cast %d : index to i64\n"
         "    %df = arith.sitofp %di : i64 to f32\n"
         "    %p = arith.mulf %slope, %df : f32\n"
         "    %r = arith.subf %s, %p : f32\n"
         "    attn.yield %r : f32\n  }\n  return %o : " + t + "\n}";
}

TEST(AttentionErrors, CapturesThroughTheCppApi) {
  const at::Tensor q = tensor({2, 3, 9, 16}), k = tensor({2, 3, 11, 16}), v = tensor({2, 3, 11, 16});
  AttentionOptions options;
  options.variant = alibiSlopesVariant();
  // Zero slopes: plain softmax attention.
  options.captures = {at::zeros({3})};
  const at::Tensor out = attention(q, k, v, options);
  EXPECT_TRUE(at::allclose(out, attention(q, k, v), 1e-5, 1e-6));
  // Slopes for two of three heads: head 2 reads outside the capture, an error, not a result.
  options.captures = {at::zeros({2})};
  EXPECT_THAT(errorMessageOf([&] { attention(q, k, v, options); }),
              AllOf(HasSubstr("indexed outside capture 0"), HasSubstr("of shape [2]")));
  options.captures = {};
  EXPECT_THAT(errorMessageOf([&] { attention(q, k, v, options); }),
              HasSubstr("reads 1 captured tensor (tensor<?xf32>) but the call passes 0"));
}

} // namespace
} // namespace attn
