#include "models/recipes/BayesianHead.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace attn::recipes {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

} // namespace

at::Generator posteriorSampleGenerator(uint64_t seed, int64_t step) {
  uint64_t key = splitmix64(splitmix64(seed ^ 0x6279'6F76'0000'0000ULL /* "byov" */) ^ uint64_t(step));
  return at::make_generator<at::CPUGeneratorImpl>(key);
}

BayesianLinearImpl::BayesianLinearImpl(int64_t in, int64_t out, double priorSigma, double initialSigma)
    : in_(in), out_(out), priorSigma_(priorSigma), initialSigma_(initialSigma) {
  TORCH_CHECK(priorSigma > 0 && initialSigma > 0, "BayesianLinear: σ_p and the initial σ must be positive");
  reset();
}

void BayesianLinearImpl::reset() {
  // torch::nn::Linear's initialisation for the means: U(−1/√in, 1/√in).
  const double bound = 1.0 / std::sqrt(double(in_));
  const double rho = std::log(std::expm1(initialSigma_)); // softplus⁻¹
  weightMu = register_parameter("weight_mu", torch::empty({out_, in_}).uniform_(-bound, bound));
  weightRho = register_parameter("weight_rho", torch::full({out_, in_}, rho));
  biasMu = register_parameter("bias_mu", torch::empty({out_}).uniform_(-bound, bound));
  biasRho = register_parameter("bias_rho", torch::full({out_}, rho));
}

torch::Tensor BayesianLinearImpl::forward(const torch::Tensor &x, bool useMean, at::Generator *generator) {
  if (useMean)
    return torch::nn::functional::linear(x, weightMu, biasMu);
  auto sample = [&](const torch::Tensor &mu, const torch::Tensor &rho) {
    auto epsilon = generator ? torch::randn(mu.sizes(), *generator, mu.options().device(torch::kCPU)).to(mu.device())
                             : torch::randn_like(mu);
    return mu + torch::softplus(rho) * epsilon;
  };
  return torch::nn::functional::linear(x, sample(weightMu, weightRho), sample(biasMu, biasRho));
}

torch::Tensor BayesianLinearImpl::kl() const {
  auto term = [&](const torch::Tensor &mu, const torch::Tensor &rho) {
    auto sigma = torch::softplus(rho);
    return (std::log(priorSigma_) - sigma.log() +
            (sigma.pow(2) + mu.pow(2)) / (2 * priorSigma_ * priorSigma_) - 0.5)
        .sum();
  };
  return term(weightMu, weightRho) + term(biasMu, biasRho);
}

BayesianMlpHeadImpl::BayesianMlpHeadImpl(int64_t in, int64_t hidden, int64_t out, double priorSigma)
    : in_(in), hidden_(hidden), out_(out), priorSigma_(priorSigma) {
  reset();
}

void BayesianMlpHeadImpl::reset() {
  fc1 = register_module("fc1", BayesianLinear(in_, hidden_, priorSigma_));
  norm = register_module("norm", SyncBatchNorm1d(hidden_));
  fc2 = register_module("fc2", BayesianLinear(hidden_, out_, priorSigma_));
}

torch::Tensor BayesianMlpHeadImpl::forward(const torch::Tensor &x, bool useMean, at::Generator *generator) {
  return fc2->forward(torch::relu(norm->forward(fc1->forward(x, useMean, generator))), useMean, generator);
}

torch::Tensor BayesianMlpHeadImpl::kl() const { return fc1->kl() + fc2->kl(); }

double meanPosteriorSigma(const BayesianMlpHeadImpl &head) {
  torch::NoGradGuard noGrad;
  double sum = 0;
  int64_t count = 0;
  for (const auto *layer : {head.fc1.get(), head.fc2.get()})
    for (const auto &rho : {layer->weightRho, layer->biasRho}) {
      sum += torch::softplus(rho.to(torch::kFloat64)).sum().item<double>();
      count += rho.numel();
    }
  return sum / double(count);
}

double predictiveStd(BayesianMlpHeadImpl &head, const torch::Tensor &inputs, int64_t samples,
                     at::Generator *generator) {
  TORCH_CHECK(samples >= 2, "predictiveStd: needs at least 2 samples, got ", samples);
  torch::NoGradGuard noGrad;
  const bool wasTraining = head.is_training();
  head.eval();
  std::vector<torch::Tensor> outputs;
  for (int64_t i = 0; i < samples; ++i)
    outputs.push_back(head.forward(inputs, /*useMean=*/false, generator).to(torch::kFloat64));
  head.train(wasTraining);
  return torch::stack(outputs).std(0).mean().item<double>();
}

} // namespace attn::recipes
