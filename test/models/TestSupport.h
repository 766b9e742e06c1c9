// Helpers shared by the models tests.
#ifndef TEST_MODELS_TESTSUPPORT_H
#define TEST_MODELS_TESTSUPPORT_H

#include <torch/nn/module.h>

#include <map>
#include <string>

namespace attn::test {

/// ‖a − b‖ / ‖b‖ in float64.
double relativeError(const torch::Tensor &a, const torch::Tensor &b);
/// Copies every parameter and buffer of `from` into the same-named one of `to`.
void copyState(const torch::nn::Module &from, torch::nn::Module &to);
/// Every parameter that requires grad has a finite, defined gradient; returns how many.
int64_t expectFiniteGradients(const torch::nn::Module &module);
/// The gradients of `module`'s parameters by name (clones), then zeroed.
std::map<std::string, torch::Tensor> takeGradients(torch::nn::Module &module);

} // namespace attn::test

#endif // TEST_MODELS_TESTSUPPORT_H
