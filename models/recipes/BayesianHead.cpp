#include "models/recipes/BayesianHead.h"

#include <cmath>

namespace attn::recipes {

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

torch::Tensor BayesianLinearImpl::forward(const torch::Tensor &x, bool useMean) {
  if (useMean)
    return torch::nn::functional::linear(x, weightMu, biasMu);
  auto sample = [](const torch::Tensor &mu, const torch::Tensor &rho) {
    return mu + torch::softplus(rho) * torch::randn_like(mu);
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

torch::Tensor BayesianMlpHeadImpl::forward(const torch::Tensor &x, bool useMean) {
  return fc2->forward(torch::relu(norm->forward(fc1->forward(x, useMean))), useMean);
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

double predictiveStd(BayesianMlpHeadImpl &head, const torch::Tensor &inputs, int64_t samples) {
  TORCH_CHECK(samples >= 2, "predictiveStd: needs at least 2 samples, got ", samples);
  torch::NoGradGuard noGrad;
  const bool wasTraining = head.is_training();
  head.eval();
  std::vector<torch::Tensor> outputs;
  for (int64_t i = 0; i < samples; ++i)
    outputs.push_back(head.forward(inputs).to(torch::kFloat64));
  head.train(wasTraining);
  return torch::stack(outputs).std(0).mean().item<double>();
}

} // namespace attn::recipes
