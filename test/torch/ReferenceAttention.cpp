#include "test/torch/ReferenceAttention.h"

#include <torch/autograd.h>

#include <cmath>
#include <limits>

namespace attn::test {
namespace {

at::Tensor zeroDisallowed(const at::Tensor &probabilities, const at::Tensor &allowed) {
  return probabilities.masked_fill(allowed.logical_not(), 0.0);
}

at::Tensor asLeafDouble(const at::Tensor &tensor) {
  return tensor.detach().to(at::kDouble).requires_grad_(true);
}

} // namespace

ReferenceNormalizer softmaxNormalizer() {
  return [](const at::Tensor &scores, const at::Tensor &allowed) {
    const at::Tensor masked =
        scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    // A fully masked row is NaN after softmax; zeroDisallowed turns it into 0.
    return zeroDisallowed(masked.softmax(-1), allowed);
  };
}

ReferenceNormalizer sigmoidNormalizer(std::optional<double> bias) {
  return [bias](const at::Tensor &scores, const at::Tensor &allowed) {
    const double b = bias.value_or(-std::log(static_cast<double>(scores.size(-1))));
    return zeroDisallowed((scores + b).sigmoid(), allowed);
  };
}

ReferenceNormalizer reluNormalizer(std::optional<double> scale) {
  return [scale](const at::Tensor &scores, const at::Tensor &allowed) {
    const double c = scale.value_or(1.0 / static_cast<double>(scores.size(-1)));
    return zeroDisallowed(scores.relu() * c, allowed);
  };
}

ReferenceNormalizer elementwiseNormalizer(std::function<at::Tensor(const at::Tensor &)> f) {
  return [f = std::move(f)](const at::Tensor &scores, const at::Tensor &allowed) {
    return zeroDisallowed(f(scores), allowed);
  };
}

ReferenceResult referenceAttention(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                                   const at::Tensor &gradOut,
                                   const ReferenceNormalizer &normalizer, double scale,
                                   bool causal) {
  const at::Tensor q64 = asLeafDouble(q), k64 = asLeafDouble(k), v64 = asLeafDouble(v);
  const int64_t group = q.size(1) / k.size(1);
  const at::Tensor keys = k64.repeat_interleave(group, 1);
  const at::Tensor values = v64.repeat_interleave(group, 1);

  const at::Tensor scores = at::matmul(q64, keys.transpose(-2, -1)) * scale;
  at::Tensor allowed = at::ones({q.size(2), k.size(2)}, q64.options().dtype(at::kBool));
  if (causal)
    allowed = allowed.tril();
  const at::Tensor out = at::matmul(normalizer(scores, allowed), values);

  const torch::autograd::variable_list grads =
      torch::autograd::grad({out}, {q64, k64, v64}, {gradOut.to(at::kDouble)});
  return {out.detach(), grads[0], grads[1], grads[2]};
}

} // namespace attn::test
