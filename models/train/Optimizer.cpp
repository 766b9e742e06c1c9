#include "models/train/Optimizer.h"

#include <memory>
#include <unordered_set>

namespace attn::train {

bool takesWeightDecay(const std::string &name, const torch::Tensor &parameter) {
  if (parameter.dim() <= 1)
    return false;
  auto endsWith = [&](const std::string &suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return !endsWith("class_token") && !endsWith("position_embedding");
}

std::vector<torch::optim::OptimizerParamGroup>
adamWParameterGroups(const std::vector<const torch::nn::Module *> &modules, double learningRate,
                     double weightDecay) {
  return adamWParameterGroups(modules,
                              torch::optim::AdamWOptions(learningRate).weight_decay(weightDecay));
}

std::vector<torch::optim::OptimizerParamGroup>
adamWParameterGroups(const std::vector<const torch::nn::Module *> &modules,
                     const torch::optim::AdamWOptions &options) {
  std::vector<torch::Tensor> decayed, plain;
  std::unordered_set<const void *> seen;
  for (const torch::nn::Module *module : modules)
    for (const auto &item : module->named_parameters()) {
      const torch::Tensor &parameter = item.value();
      if (!parameter.requires_grad() || !seen.insert(parameter.unsafeGetTensorImpl()).second)
        continue;
      (takesWeightDecay(item.key(), parameter) ? decayed : plain).push_back(parameter);
    }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto add = [&](std::vector<torch::Tensor> &parameters, double decay) {
    if (parameters.empty())
      return;
    auto groupOptions = std::make_unique<torch::optim::AdamWOptions>(options);
    groupOptions->weight_decay(decay);
    groups.emplace_back(parameters, std::move(groupOptions));
  };
  add(decayed, options.weight_decay());
  add(plain, 0.0);
  return groups;
}

} // namespace attn::train
