#include "models/recipes/Ewc.h"

namespace attn::recipes {

torch::OrderedDict<std::string, torch::Tensor>
featureFisherDiagonal(torch::nn::Module &model,
                      const std::function<torch::Tensor(const torch::Tensor &)> &features,
                      const std::vector<torch::Tensor> &batches, uint64_t seed) {
  TORCH_CHECK(!batches.empty(), "featureFisherDiagonal: no batches");
  torch::OrderedDict<std::string, torch::Tensor> fisher;
  std::vector<torch::Tensor> parameters;
  std::vector<std::string> names;
  for (const auto &item : model.named_parameters())
    if (item.value().requires_grad()) {
      names.push_back(item.key());
      parameters.push_back(item.value());
      fisher.insert(item.key(), torch::zeros_like(item.value(), torch::kFloat32));
    }
  TORCH_CHECK(!parameters.empty(), "featureFisherDiagonal: the model has no trainable parameters");
  torch::AutoGradMode gradients(true);
  auto generator = at::detail::createCPUGenerator(seed);
  int64_t samples = 0;
  for (const auto &batch : batches) {
    auto f = features(batch);
    TORCH_CHECK(f.dim() == 2 && f.size(0) == batch.size(0), "featureFisherDiagonal: features must be [N, D], got ",
                f.sizes());
    auto signs = torch::randint(0, 2, f.sizes(), generator, torch::TensorOptions(torch::kFloat32));
    auto epsilon = (signs * 2 - 1).to(f.device(), f.scalar_type());
    auto g = torch::autograd::grad({(f * epsilon).sum()}, parameters, {}, false, false, /*allow_unused=*/true);
    for (size_t i = 0; i < parameters.size(); ++i)
      if (g[i].defined())
        fisher[names[i]].add_(g[i].detach().to(torch::kFloat32).pow(2));
    samples += batch.size(0);
  }
  for (auto &item : fisher)
    item.value().div_(double(samples));
  return fisher;
}

EwcPenalty::EwcPenalty(torch::nn::Module &model, torch::OrderedDict<std::string, torch::Tensor> fisher,
                       double lambda)
    : lambda_(lambda) {
  TORCH_CHECK(lambda >= 0, "EwcPenalty: λ must not be negative, got ", lambda);
  auto named = model.named_parameters();
  for (const auto &item : fisher) {
    torch::Tensor *parameter = named.find(item.key());
    TORCH_CHECK(parameter && parameter->sizes() == item.value().sizes(), "EwcPenalty: the model has no parameter '",
                item.key(), "' of the Fisher's shape");
    parameters_.push_back(*parameter);
    anchors_.push_back(parameter->detach().clone());
    fisher_.push_back(item.value().to(parameter->device(), parameter->scalar_type()));
  }
}

torch::Tensor EwcPenalty::operator()() const {
  TORCH_CHECK(!parameters_.empty(), "EwcPenalty: no parameters");
  torch::Tensor total;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    // float32 at least: (θ − θ*)² of a fine-tuned weight is far below bfloat16's resolution.
    auto delta = parameters_[i].to(torch::kFloat32) - anchors_[i].to(torch::kFloat32);
    auto term = (fisher_[i].to(torch::kFloat32) * delta * delta).sum();
    total = total.defined() ? total + term : term;
  }
  return 0.5 * lambda_ * total;
}

double EwcPenalty::fisherTotal() const {
  double total = 0;
  for (const auto &f : fisher_)
    total += f.to(torch::kFloat64).sum().item<double>();
  return total;
}

} // namespace attn::recipes
