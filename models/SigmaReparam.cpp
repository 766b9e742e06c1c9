#include "models/SigmaReparam.h"

#include "models/Autocast.h"
#include "models/Projection.h"
#include "frontend/torch/ReparamLinear.h"

#include <ATen/ops/linalg_eigh.h>
#include <torch/nn/functional/fold.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>

namespace attn::models {
namespace {

/// Writes u = the top right-singular vector of `matrix` [out, in] and γ = its largest singular
/// value, so that γ/σ(W) = 1 at step 0 (Ŵ = W), as ml-sigma-reparam's SpectralNormedWeight (which
/// takes them from an SVD). Here from the eigendecomposition of the smaller Gram matrix, in
/// float64: the same vector and value at about a third of a full SVD's cost for ViT-B's layers.
void initialiseFromSvd(const torch::Tensor &matrix, torch::Tensor &u, torch::Tensor &gamma) {
  torch::NoGradGuard noGrad;
  const torch::Tensor w = matrix.detach().to(torch::kDouble);
  const bool wide = w.size(1) > w.size(0); // then WWᵀ [out, out] is the smaller one
  auto [eigenvalues, eigenvectors] = at::linalg_eigh(wide ? w.mm(w.t()) : w.t().mm(w), "L");
  // Eigenvalues come in ascending order.
  torch::Tensor top = eigenvectors.select(1, eigenvectors.size(1) - 1);
  if (wide) {
    top = w.t().mv(top);
    top = top / top.norm();
  }
  u.copy_(top);
  gamma.fill_(std::sqrt(std::max(eigenvalues[-1].item<double>(), 0.0)));
}

/// ‖W·u‖ = vᵀ·W·u with v = normalize(W·u): σ for the current u.
torch::Tensor spectralNormOf(const torch::Tensor &matrix, const torch::Tensor &u) {
  torch::NoGradGuard noGrad;
  return matrix.mv(u).norm();
}

/// nn.Linear's default bias initialisation, U(−1/√fan_in, 1/√fan_in), which SNLinear keeps.
void initialiseBias(torch::Tensor &bias, int64_t fanIn) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fanIn));
  torch::nn::init::uniform_(bias, -bound, bound);
}

} // namespace

torch::Tensor trunc_normal_(torch::Tensor tensor, double std, double lower, double upper) {
  torch::NoGradGuard noGrad;
  auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  const double low = cdf(lower / std), high = cdf(upper / std);
  tensor.uniform_(2 * low - 1, 2 * high - 1);
  tensor.erfinv_().mul_(std * std::sqrt(2.0)).clamp_(lower, upper);
  return tensor;
}

// ----- SigmaReparamLinear ------------------------------------------------------------------------

SigmaReparamLinearOptions::SigmaReparamLinearOptions(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {}

SigmaReparamLinearImpl::SigmaReparamLinearImpl(SigmaReparamLinearOptions options_)
    : options(std::move(options_)) {
  reset();
}

void SigmaReparamLinearImpl::reset() {
  TORCH_CHECK(options.in_features() > 0 && options.out_features() > 0,
              "SigmaReparamLinear: in_features and out_features must be positive, got ",
              options.in_features(), " and ", options.out_features());
  weight = register_parameter("weight",
                              torch::empty({options.out_features(), options.in_features()}));
  trunc_normal_(weight, 0.02 * options.init_multiplier());
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_features()}));
    initialiseBias(bias, options.in_features());
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  gamma = register_parameter("gamma", torch::ones({1}));
  u = register_buffer("u", torch::empty({options.in_features()}));
  initialiseFromSvd(weight, u, gamma);
}

void SigmaReparamLinearImpl::reset_from(const torch::Tensor &newWeight,
                                        const torch::Tensor &newBias) {
  TORCH_CHECK(newWeight.sizes() == weight.sizes(), "SigmaReparamLinear::reset_from: weight must be ",
              weight.sizes(), ", got ", newWeight.sizes());
  TORCH_CHECK(newBias.defined() == bias.defined(),
              "SigmaReparamLinear::reset_from: bias presence must match the options");
  torch::NoGradGuard noGrad;
  weight.copy_(newWeight);
  if (bias.defined())
    bias.copy_(newBias);
  initialiseFromSvd(weight, u, gamma);
}

namespace {
/// Under autocast σReparam runs in its parameters' dtype (float32 master weights): the power
/// iteration and σ need it, and the op checks that x matches the weight.
torch::Tensor inWeightDtype(const torch::Tensor &x, const torch::Tensor &weight) {
  return autocastDtype(x.device()) ? x.to(weight.scalar_type()) : x;
}
} // namespace

torch::Tensor SigmaReparamLinearImpl::forward(const torch::Tensor &x) {
  const torch::Tensor input = inWeightDtype(x, weight);
  AutocastExcluded excluded; // (autocast counts as off inside: check before)
  return attn::reparam_linear(input, weight,
                              bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt,
                              gamma, u, is_training());
}

torch::Tensor SigmaReparamLinearImpl::spectral_norm() const { return spectralNormOf(weight, u); }

torch::Tensor SigmaReparamLinearImpl::effective_spectral_norm() const {
  torch::NoGradGuard noGrad;
  return gamma.reshape({}) / spectral_norm();
}

void SigmaReparamLinearImpl::pretty_print(std::ostream &stream) const {
  stream << "attn::models::SigmaReparamLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << std::boolalpha
         << options.bias() << ")";
}

// ----- SigmaReparamConv2d ------------------------------------------------------------------------

SigmaReparamConv2dOptions::SigmaReparamConv2dOptions(int64_t in_channels, int64_t out_channels,
                                                     torch::ExpandingArray<2> kernel_size)
    : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}

SigmaReparamConv2dImpl::SigmaReparamConv2dImpl(SigmaReparamConv2dOptions options_)
    : options(std::move(options_)) {
  reset();
}

void SigmaReparamConv2dImpl::reset() {
  const auto kernel = *options.kernel_size();
  TORCH_CHECK(options.in_channels() > 0 && options.out_channels() > 0 && kernel[0] > 0 &&
                  kernel[1] > 0,
              "SigmaReparamConv2d: channels and kernel size must be positive");
  const int64_t fanIn = options.in_channels() * kernel[0] * kernel[1];
  weight = register_parameter(
      "weight", torch::empty({options.out_channels(), options.in_channels(), kernel[0], kernel[1]}));
  trunc_normal_(weight, 0.02 * options.init_multiplier());
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_channels()}));
    initialiseBias(bias, fanIn);
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  gamma = register_parameter("gamma", torch::ones({1}));
  u = register_buffer("u", torch::empty({fanIn}));
  initialiseFromSvd(weight.reshape({options.out_channels(), fanIn}), u, gamma);
}

void SigmaReparamConv2dImpl::reset_from(const torch::Tensor &newWeight,
                                        const torch::Tensor &newBias) {
  TORCH_CHECK(newWeight.sizes() == weight.sizes(), "SigmaReparamConv2d::reset_from: weight must be ",
              weight.sizes(), ", got ", newWeight.sizes());
  TORCH_CHECK(newBias.defined() == bias.defined(),
              "SigmaReparamConv2d::reset_from: bias presence must match the options");
  torch::NoGradGuard noGrad;
  weight.copy_(newWeight);
  if (bias.defined())
    bias.copy_(newBias);
  initialiseFromSvd(weight.reshape({options.out_channels(), -1}), u, gamma);
}

torch::Tensor SigmaReparamConv2dImpl::forward(const torch::Tensor &x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(),
              "SigmaReparamConv2d: input must be [B, ", options.in_channels(),
              ", H, W], got shape ", x.sizes());
  const auto kernel = *options.kernel_size(), stride = *options.stride(),
             padding = *options.padding();
  const int64_t outHeight = (x.size(2) + 2 * padding[0] - kernel[0]) / stride[0] + 1;
  const int64_t outWidth = (x.size(3) + 2 * padding[1] - kernel[1]) / stride[1] + 1;
  TORCH_CHECK(outHeight > 0 && outWidth > 0, "SigmaReparamConv2d: input ", x.sizes(),
              " is smaller than the kernel");
  namespace F = torch::nn::functional;
  // Columns [B, in·kh·kw, L] are ordered (channel, row, column), as the kernel's reshape.
  const torch::Tensor input = inWeightDtype(x, weight);
  AutocastExcluded excluded; // (autocast counts as off inside: check before)
  const torch::Tensor columns = F::unfold(
      input, F::UnfoldFuncOptions(options.kernel_size()).stride(options.stride()).padding(options.padding()));
  const torch::Tensor y = attn::reparam_linear(
      columns.transpose(1, 2), weight.reshape({options.out_channels(), -1}),
      bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt, gamma, u, is_training());
  return y.transpose(1, 2).reshape({x.size(0), options.out_channels(), outHeight, outWidth});
}

torch::Tensor SigmaReparamConv2dImpl::spectral_norm() const {
  return spectralNormOf(weight.reshape({options.out_channels(), -1}), u);
}

torch::Tensor SigmaReparamConv2dImpl::effective_spectral_norm() const {
  torch::NoGradGuard noGrad;
  return gamma.reshape({}) / spectral_norm();
}

void SigmaReparamConv2dImpl::pretty_print(std::ostream &stream) const {
  stream << "attn::models::SigmaReparamConv2d(" << options.in_channels() << ", "
         << options.out_channels() << ", kernel_size=" << options.kernel_size()
         << ", stride=" << options.stride() << ", padding=" << options.padding() << ")";
}

// ----- conversion --------------------------------------------------------------------------------

int64_t convert_to_sigma_reparam(torch::nn::Module &module) {
  // Check first, so that a refused tree is left untouched.
  auto checkChildren = [](const torch::nn::Module &parent) {
    if (dynamic_cast<const ProjectionImpl *>(&parent))
      return;
    for (const auto &child : parent.named_children())
      TORCH_CHECK(!dynamic_cast<torch::nn::LinearImpl *>(child.value().get()),
                  "convert_to_sigma_reparam: '", child.key(), "' in ", parent.name(),
                  " is a bare torch::nn::Linear, which its owner calls through a typed holder "
                  "and so cannot be swapped from outside; build it as attn::models::Projection");
  };
  const std::vector<std::shared_ptr<torch::nn::Module>> descendants =
      module.modules(/*include_self=*/false);
  checkChildren(module);
  for (const auto &descendant : descendants)
    checkChildren(*descendant);

  std::vector<torch::nn::Module *> all = {&module};
  for (const auto &descendant : descendants)
    all.push_back(descendant.get());
  int64_t converted = 0;
  for (torch::nn::Module *candidate : all) {
    auto *convertible = dynamic_cast<SigmaReparamConvertible *>(candidate);
    if (convertible && !convertible->is_sigma_reparam()) {
      convertible->convert_to_sigma_reparam();
      ++converted;
    }
  }
  return converted;
}

} // namespace attn::models
