#include "test/models/TestSupport.h"

#include <gtest/gtest.h>

namespace attn::test {

double relativeError(const torch::Tensor &a, const torch::Tensor &b) {
  const torch::Tensor a64 = a.detach().to(torch::kDouble), b64 = b.detach().to(torch::kDouble);
  EXPECT_EQ(a.sizes(), b.sizes());
  return ((a64 - b64).norm() / b64.norm().clamp_min(1e-300)).item<double>();
}

void copyState(const torch::nn::Module &from, torch::nn::Module &to) {
  torch::NoGradGuard noGrad;
  auto target = to.named_parameters();
  for (const auto &item : from.named_parameters()) {
    ASSERT_TRUE(target.contains(item.key())) << item.key();
    target[item.key()].copy_(item.value());
  }
  auto targetBuffers = to.named_buffers();
  for (const auto &item : from.named_buffers()) {
    ASSERT_TRUE(targetBuffers.contains(item.key())) << item.key();
    targetBuffers[item.key()].copy_(item.value());
  }
}

int64_t expectFiniteGradients(const torch::nn::Module &module) {
  int64_t count = 0;
  for (const auto &item : module.named_parameters()) {
    if (!item.value().requires_grad())
      continue;
    const torch::Tensor &grad = item.value().grad();
    EXPECT_TRUE(grad.defined()) << item.key() << " has no gradient";
    if (grad.defined()) {
      EXPECT_TRUE(torch::isfinite(grad).all().item<bool>()) << item.key();
      ++count;
    }
  }
  return count;
}

std::map<std::string, torch::Tensor> takeGradients(torch::nn::Module &module) {
  std::map<std::string, torch::Tensor> grads;
  for (auto &item : module.named_parameters()) {
    if (item.value().grad().defined()) {
      grads[item.key()] = item.value().grad().clone();
      item.value().mutable_grad().zero_();
    }
  }
  return grads;
}

} // namespace attn::test
