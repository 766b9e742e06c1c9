// The recipes' AdamW parameter groups: weight decay on weight matrices and kernels only.
#ifndef MODELS_TRAIN_OPTIMIZER_H
#define MODELS_TRAIN_OPTIMIZER_H

#include <torch/torch.h>

#include <string>
#include <vector>

namespace attn::train {

/// Whether a parameter takes weight decay: matrices and convolution kernels do; parameters with
/// one dimension (biases, norm scales, LayerScale, σReparam's γ) and the learned class token and
/// position embedding do not, as the ViT/DeiT training recipes (timm's no_weight_decay) have it.
bool takesWeightDecay(const std::string &name, const torch::Tensor &parameter);

/// Two AdamW groups over the trainable parameters of `modules` (a parameter shared by several
/// modules is listed once): {decayed, weight_decay = weightDecay} and {the rest, 0}. Empty groups
/// are left out.
std::vector<torch::optim::OptimizerParamGroup>
adamWParameterGroups(const std::vector<const torch::nn::Module *> &modules, double learningRate,
                     double weightDecay);
/// The same with every other AdamW option (betas, eps) from `options`; the decayed group takes
/// its weight decay.
std::vector<torch::optim::OptimizerParamGroup>
adamWParameterGroups(const std::vector<const torch::nn::Module *> &modules,
                     const torch::optim::AdamWOptions &options);

} // namespace attn::train

#endif // MODELS_TRAIN_OPTIMIZER_H
