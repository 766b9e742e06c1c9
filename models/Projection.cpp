#include "models/Projection.h"

namespace attn::models {

ProjectionOptions::ProjectionOptions(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {}

ProjectionImpl::ProjectionImpl(ProjectionOptions options_) : options(std::move(options_)) {
  reset();
}

void ProjectionImpl::reset() {
  TORCH_CHECK(options.in_features() > 0 && options.out_features() > 0,
              "Projection: in_features and out_features must be positive, got ",
              options.in_features(), " and ", options.out_features());
  torch::NoGradGuard noGrad;
  if (options.sigma_reparam()) {
    linear = nullptr;
    reparam = register_module(
        "reparam", SigmaReparamLinear(SigmaReparamLinearOptions(options.in_features(),
                                                                options.out_features())
                                          .bias(options.bias())
                                          .init_multiplier(options.init_multiplier())));
    if (options.bias())
      reparam->bias.zero_();
  } else {
    reparam = nullptr;
    linear = register_module(
        "linear", torch::nn::Linear(torch::nn::LinearOptions(options.in_features(),
                                                             options.out_features())
                                        .bias(options.bias())));
    trunc_normal_(linear->weight, 0.02 * options.init_multiplier());
    if (options.bias())
      linear->bias.zero_();
  }
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor &x) {
  return reparam ? reparam->forward(x) : linear->forward(x);
}

void ProjectionImpl::convert_to_sigma_reparam() {
  if (reparam)
    return;
  SigmaReparamLinear converted(SigmaReparamLinearOptions(options.in_features(),
                                                         options.out_features())
                                   .bias(options.bias())
                                   .init_multiplier(options.init_multiplier()));
  converted->to(linear->weight.device(), linear->weight.scalar_type());
  converted->reset_from(linear->weight, linear->bias);
  converted->train(is_training());
  unregister_module("linear");
  linear = nullptr;
  reparam = register_module("reparam", converted);
  options.sigma_reparam(true);
}

const torch::Tensor &ProjectionImpl::weight() const {
  return reparam ? reparam->weight : linear->weight;
}

void ProjectionImpl::pretty_print(std::ostream &stream) const {
  stream << "attn::models::Projection(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << std::boolalpha
         << options.bias() << ", sigma_reparam=" << is_sigma_reparam() << ")";
}

} // namespace attn::models
