// attn::reparam_linear and the σReparam layers against an independent LibTorch implementation of
// the formula, in float64: y, the updated u, and the gradients of x, W, γ and b.
#include "frontend/torch/ReparamLinear.h"
#include "models/Projection.h"
#include "models/SigmaReparam.h"
#include "test/models/TestSupport.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/modules/container/sequential.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/linalg_svdvals.h>

#include <gtest/gtest.h>

namespace attn::test {
namespace {

using models::SigmaReparamConv2d;
using models::SigmaReparamConv2dOptions;
using models::SigmaReparamLinear;
using models::SigmaReparamLinearOptions;

struct FormulaResult {
  torch::Tensor y, sigma, updatedU, gradX, gradW, gradGamma, gradB;
};

/// σReparam written out directly: power iteration without grad, σ = vᵀWu with u, v constants.
FormulaResult formula(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b,
                      const torch::Tensor &gamma, const torch::Tensor &u, bool training,
                      const torch::Tensor &gradY) {
  auto leaf = [](const torch::Tensor &t) { return t.detach().clone().requires_grad_(true); };
  torch::Tensor xl = leaf(x), wl = leaf(w), bl = leaf(b), gl = leaf(gamma);
  torch::Tensor v, uUsed;
  {
    torch::NoGradGuard noGrad;
    // The power step is taken in eval too (ml-sigma-reparam's get_sigma); only training
    // keeps the new u.
    v = torch::mv(w, u);
    v = v / v.norm();
    uUsed = torch::mv(w.t(), v);
    uUsed = uUsed / uUsed.norm();
  }
  const torch::Tensor sigma = torch::dot(v, torch::mv(wl, uUsed));
  const torch::Tensor effective = wl * gl / sigma;
  const torch::Tensor y = torch::matmul(xl, effective.t()) + bl;
  const auto grads = torch::autograd::grad({y}, {xl, wl, gl, bl}, {gradY});
  return {y.detach(), sigma.detach(), uUsed, grads[0], grads[1], grads[2], grads[3]};
}

struct OpCase {
  torch::Tensor x, w, b, gamma, u, gradY;
};

OpCase randomCase(int64_t batch, int64_t in, int64_t out) {
  OpCase c;
  c.x = torch::randn({batch, 3, in}, torch::kDouble);
  c.w = torch::randn({out, in}, torch::kDouble);
  c.b = torch::randn({out}, torch::kDouble);
  c.gamma = torch::rand({1}, torch::kDouble) + 0.5;
  c.u = torch::randn({in}, torch::kDouble);
  c.u /= c.u.norm();
  c.gradY = torch::randn({batch, 3, out}, torch::kDouble);
  return c;
}

class ReparamLinearOpTest : public ::testing::TestWithParam<bool> {};

TEST_P(ReparamLinearOpTest, MatchesFormulaWithGradients) {
  const bool training = GetParam();
  torch::manual_seed(1);
  const OpCase c = randomCase(4, 7, 5);
  const FormulaResult expected = formula(c.x, c.w, c.b, c.gamma, c.u, training, c.gradY);

  torch::Tensor x = c.x.clone().requires_grad_(true), w = c.w.clone().requires_grad_(true),
                b = c.b.clone().requires_grad_(true), gamma = c.gamma.clone().requires_grad_(true);
  torch::Tensor u = c.u.clone();
  const torch::Tensor y = attn::reparam_linear(x, w, b, gamma, u, training);
  y.backward(c.gradY);

  EXPECT_LT(relativeError(y, expected.y), 1e-12);
  if (!training) {
    EXPECT_TRUE(torch::equal(u, c.u)) << "eval must not update u";
  } else {
    EXPECT_LT(relativeError(u, expected.updatedU), 1e-12);
    EXPECT_GT((u - c.u).abs().max().item<double>(), 1e-6) << "training must update u";
  }
  EXPECT_LT(relativeError(x.grad(), expected.gradX), 1e-12);
  EXPECT_LT(relativeError(w.grad(), expected.gradW), 1e-12);
  EXPECT_LT(relativeError(gamma.grad(), expected.gradGamma), 1e-12);
  EXPECT_LT(relativeError(b.grad(), expected.gradB), 1e-12);
}

TEST_P(ReparamLinearOpTest, InferenceModeKernelMatchesAndUpdatesOnce) {
  const bool training = GetParam();
  torch::manual_seed(2);
  const OpCase c = randomCase(2, 6, 3);
  const FormulaResult expected = formula(c.x, c.w, c.b, c.gamma, c.u, training, c.gradY);
  torch::Tensor u = c.u.clone();
  torch::Tensor y;
  {
    c10::InferenceMode inference; // below autograd: the CPU kernel itself
    y = attn::reparam_linear(c.x, c.w, c.b, c.gamma, u, training);
  }
  EXPECT_LT(relativeError(y, expected.y), 1e-12);
  EXPECT_LT(relativeError(u, training ? expected.updatedU : c.u), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(TrainAndEval, ReparamLinearOpTest, ::testing::Values(true, false),
                         [](const auto &info) { return info.param ? "Train" : "Eval"; });

TEST(ReparamLinearOp, WithoutBiasAndGradientOfXOnlyWhenAsked) {
  torch::manual_seed(3);
  const OpCase c = randomCase(3, 4, 6);
  torch::Tensor w = c.w.clone().requires_grad_(true), u = c.u.clone();
  const torch::Tensor y = attn::reparam_linear(c.x, w, c10::nullopt, c.gamma, u, true);
  y.backward(c.gradY);
  const FormulaResult expected =
      formula(c.x, c.w, torch::zeros({6}, torch::kDouble), c.gamma, c.u, true, c.gradY);
  EXPECT_LT(relativeError(y, expected.y), 1e-12);
  EXPECT_LT(relativeError(w.grad(), expected.gradW), 1e-12);
  EXPECT_FALSE(c.x.grad().defined());
}

/// Gradient accumulation: each call saves its own u, so a later in-place update of u does not
/// invalidate an earlier call's backward, and the gradients add up.
TEST(ReparamLinearOp, TwoTrainingCallsBeforeOneBackward) {
  torch::manual_seed(9);
  const OpCase c = randomCase(2, 5, 4);
  torch::Tensor w = c.w.clone().requires_grad_(true), u = c.u.clone();
  const torch::Tensor x2 = torch::randn_like(c.x);
  const torch::Tensor y1 = attn::reparam_linear(c.x, w, c.b, c.gamma, u, true);
  const torch::Tensor uAfterFirst = u.clone();
  const torch::Tensor y2 = attn::reparam_linear(x2, w, c.b, c.gamma, u, true);
  (y1 * c.gradY).sum().add((y2 * c.gradY).sum()).backward();
  const FormulaResult first = formula(c.x, c.w, c.b, c.gamma, c.u, true, c.gradY);
  const FormulaResult second = formula(x2, c.w, c.b, c.gamma, uAfterFirst, true, c.gradY);
  EXPECT_LT(relativeError(w.grad(), first.gradW + second.gradW), 1e-12);
  EXPECT_LT(relativeError(u, second.updatedU), 1e-12);
}

/// No GPU here: at least check that CUDA tensors have a kernel to reach (the same composite).
TEST(ReparamLinearOp, RegisteredForCpuCudaAndAutograd) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("attn::reparam_linear", "");
  EXPECT_TRUE(op.hasKernelForDispatchKey(c10::DispatchKey::CPU));
  EXPECT_TRUE(op.hasKernelForDispatchKey(c10::DispatchKey::CUDA));
  EXPECT_TRUE(op.hasKernelForDispatchKey(c10::DispatchKey::Autograd)); // the alias key
  EXPECT_NE(toString(op.schema()).find("Tensor(a!) u"), std::string::npos);
}

TEST(ReparamLinearOp, RejectsBadArguments) {
  torch::Tensor x = torch::randn({2, 4}), w = torch::randn({3, 4}), b = torch::randn({3}),
                g = torch::ones({1}), u = torch::randn({4});
  auto call = [&](const torch::Tensor &x_, const torch::Tensor &w_, const torch::Tensor &b_,
                  const torch::Tensor &g_, torch::Tensor u_) {
    return attn::reparam_linear(x_, w_, b_, g_, u_, true);
  };
  auto expectMessage = [](const std::function<void()> &f, const std::string &needle) {
    try {
      f();
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const c10::Error &error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  };
  expectMessage([&] { call(x, torch::randn({3, 4, 1}), b, g, u); }, "weight must be 2-D");
  expectMessage([&] { call(torch::randn({2, 5}), w, b, g, u); }, "x must be [..., 4]");
  expectMessage([&] { call(x, w, b, g, torch::randn({3})); }, "u must be [4]");
  expectMessage([&] { call(x, w, torch::randn({4}), g, u); }, "bias must be [3]");
  expectMessage([&] { call(x, w, b, torch::ones({2}), u); }, "gamma must hold one element");
  expectMessage([&] { call(x.to(torch::kDouble), w, b, g, u); }, "x has dtype Double");
  expectMessage([&] { call(x, w, b, g, u.clone().requires_grad_(true)); },
                "must not require grad");
  expectMessage([&] { call(x.to(torch::kLong), w.to(torch::kLong), b, g, u); },
                "must be floating point");
}

// ----- modules ---------------------------------------------------------------------------------

TEST(SigmaReparamLinear, InitialisationMatchesSNLinear) {
  // Wide and tall weights (u comes from the smaller Gram matrix in each case).
  for (auto [in, out] : {std::pair<int64_t, int64_t>{64, 48}, {48, 64}}) {
    torch::manual_seed(4);
    SigmaReparamLinear layer(SigmaReparamLinearOptions(in, out).init_multiplier(2.0));
    const torch::Tensor w = layer->weight.detach().to(torch::kDouble);
    EXPECT_NEAR(w.std().item<double>(), 0.04, 0.004);
    EXPECT_LE(w.abs().max().item<double>(), 2.0);
    auto [left, singular, rightT] = at::linalg_svd(w, false);
    // γ = σ(W) so Ŵ = W at step 0, and u is the top right-singular vector (up to sign).
    EXPECT_NEAR(layer->gamma.item<double>(), singular[0].item<double>(), 1e-5);
    EXPECT_NEAR(std::abs(torch::dot(layer->u.to(torch::kDouble), rightT[0]).item<double>()), 1.0,
                1e-5);
    EXPECT_NEAR(layer->spectral_norm().item<double>(), singular[0].item<double>(), 1e-5);
    EXPECT_NEAR(layer->effective_spectral_norm().item<double>(), 1.0, 1e-5);
    EXPECT_EQ(layer->named_buffers().size(), 1u);
    EXPECT_TRUE(layer->named_parameters().contains("gamma"));
  }
}

TEST(SigmaReparamLinear, ModuleMatchesFormulaInTrainAndEval) {
  torch::manual_seed(5);
  SigmaReparamLinear layer(SigmaReparamLinearOptions(6, 4));
  layer->to(torch::kDouble);
  {
    // Move away from the converged singular vector so that a step visibly changes u.
    torch::NoGradGuard noGrad;
    layer->u.copy_(torch::randn({6}, torch::kDouble));
    layer->u /= layer->u.norm();
    layer->gamma.fill_(1.7);
  }
  for (bool training : {true, false}) {
    layer->train(training);
    const torch::Tensor x = torch::randn({5, 6}, torch::kDouble);
    const torch::Tensor gradY = torch::randn({5, 4}, torch::kDouble);
    const torch::Tensor uBefore = layer->u.clone();
    const FormulaResult expected = formula(x, layer->weight, layer->bias, layer->gamma,
                                           uBefore, training, gradY);
    layer->zero_grad();
    layer->forward(x).backward(gradY);
    // Both modes take the power step; only training stores it.
    EXPECT_LT(relativeError(layer->u, training ? expected.updatedU : uBefore), 1e-12) << training;
    EXPECT_LT(relativeError(layer->weight.grad(), expected.gradW), 1e-12) << training;
    EXPECT_LT(relativeError(layer->gamma.grad(), expected.gradGamma), 1e-12) << training;
    EXPECT_LT(relativeError(layer->bias.grad(), expected.gradB), 1e-12) << training;
  }
}

TEST(SigmaReparamLinear, PowerIterationConvergesToSpectralNorm) {
  torch::manual_seed(6);
  SigmaReparamLinear layer(SigmaReparamLinearOptions(16, 12));
  {
    torch::NoGradGuard noGrad;
    layer->u.copy_(torch::randn({16}));
    layer->weight.mul_(10.0);
  }
  const double target = at::linalg_svdvals(layer->weight.detach())[0].item<double>();
  const torch::Tensor x = torch::randn({2, 16});
  layer->train();
  for (int step = 0; step < 200; ++step)
    layer->forward(x);
  EXPECT_NEAR(layer->spectral_norm().item<double>(), target, 1e-3 * target);
  layer->eval();
  const torch::Tensor before = layer->u.clone();
  layer->forward(x);
  EXPECT_TRUE(torch::equal(before, layer->u));
}

TEST(SigmaReparamConv2d, MatchesConvWithReparametrisedKernel) {
  torch::manual_seed(7);
  SigmaReparamConv2d conv(SigmaReparamConv2dOptions(3, 5, {3, 2}).stride({2, 1}).padding({1, 0}));
  conv->to(torch::kDouble);
  conv->train();
  const torch::Tensor x = torch::randn({2, 3, 7, 6}, torch::kDouble);
  const torch::Tensor u0 = conv->u.clone();
  const torch::Tensor y = conv->forward(x);
  // Expected: the kernel as a [5, 18] matrix, one power-iteration step from u0.
  const torch::Tensor matrix = conv->weight.detach().reshape({5, -1});
  torch::Tensor v = matrix.mv(u0);
  v /= v.norm();
  torch::Tensor u1 = matrix.t().mv(v);
  u1 /= u1.norm();
  const torch::Tensor sigma = torch::dot(v, matrix.mv(u1));
  const torch::Tensor kernel = conv->weight.detach() * conv->gamma.detach() / sigma;
  namespace F = torch::nn::functional;
  const torch::Tensor expected =
      F::conv2d(x, kernel, F::Conv2dFuncOptions().bias(conv->bias.detach()).stride({2, 1}).padding({1, 0}));
  EXPECT_LT(relativeError(y, expected), 1e-12);
  EXPECT_LT(relativeError(conv->u, u1), 1e-12);
  y.sum().backward();
  EXPECT_TRUE(conv->weight.grad().defined() && conv->gamma.grad().defined());
}

TEST(ConvertToSigmaReparam, PreservesTheFunctionAndRefusesBareLinear) {
  torch::manual_seed(8);
  models::Projection projection(models::ProjectionOptions(8, 5));
  projection->eval();
  const torch::Tensor x = torch::randn({3, 8});
  const torch::Tensor before = projection->forward(x);
  EXPECT_EQ(models::convert_to_sigma_reparam(*projection), 1);
  EXPECT_TRUE(projection->is_sigma_reparam());
  EXPECT_LT(relativeError(projection->forward(x), before), 1e-5);
  EXPECT_EQ(models::convert_to_sigma_reparam(*projection), 0) << "already converted";
  EXPECT_TRUE(projection->named_parameters().contains("reparam.gamma"));
  EXPECT_FALSE(projection->named_parameters().contains("linear.weight"));

  torch::nn::Sequential bare(torch::nn::Linear(4, 4));
  EXPECT_THROW(models::convert_to_sigma_reparam(*bare), c10::Error);
}

} // namespace
} // namespace attn::test
