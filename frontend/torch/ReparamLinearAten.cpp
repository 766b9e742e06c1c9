// attn::reparam_linear's internal ops where no compiled σReparam kernel runs (CUDA, and
// half-precision parameters on the CPU): the same formulas in ATen ops, the scale applied to
// the product's output rather than to a copy of W. The device kernels of the GPU lowering
// (attn-lower-reparam-linear-gpu) compile to PTX and pass ptxas, but nothing launches them yet:
// they have never run on a GPU.
#include "frontend/torch/ReparamLinearKernels.h"

#include <ATen/ATen.h>

namespace attn::torchop {
namespace {
constexpr double kNormalizeEps = 1e-12; // as torch.nn.functional.normalize

at::Tensor normalized(const at::Tensor &vector) {
  return vector / vector.norm().clamp_min(kNormalizeEps);
}
} // namespace

ReparamForwardResult reparamForwardAten(const at::Tensor &x, const at::Tensor &weight,
                                        const c10::optional<at::Tensor> &bias,
                                        const at::Tensor &gamma, at::Tensor &u, bool training) {
  checkReparamLinearInputs(x, weight, bias, gamma, u);
  const at::Tensor w = weight.detach();
  const at::Tensor v = normalized(w.mv(u));
  const at::Tensor uNext = normalized(w.t().mv(v));
  const at::Tensor sigma = at::dot(v, w.mv(uNext));
  const at::Tensor scale = gamma.detach().reshape({}) / sigma;
  if (training)
    u.copy_(uNext);
  // (x·Wᵀ)·c + b: the scale on the product's output, W read as it is.
  const c10::optional<at::Tensor> noBias;
  at::Tensor y = at::linear(x, w, noBias).mul_(scale);
  if (bias && bias->defined())
    y.add_(*bias);
  return {y, v, uNext, at::stack({sigma, scale})};
}

ReparamBackwardResult reparamBackwardAten(const at::Tensor &gradY, const at::Tensor &x,
                                          const at::Tensor &weight, const at::Tensor &gamma,
                                          const at::Tensor &v, const at::Tensor &uNext,
                                          const at::Tensor &scales, bool hasBias,
                                          bool needsGradX) {
  const int64_t out = weight.size(0), in = weight.size(1);
  const at::Tensor sigma = scales[0], scale = scales[1];
  const at::Tensor dy = gradY.reshape({-1, out});
  const at::Tensor g = dy.t().mm(x.reshape({-1, in}));
  const at::Tensor inner = (g * weight).sum();
  const at::Tensor gradWeight =
      g.mul(scale).sub_(at::outer(v, uNext).mul_(gamma.reshape({}) * inner / (sigma * sigma)));
  const at::Tensor gradX =
      needsGradX ? gradY.matmul(weight).mul_(scale) : at::empty({0, in}, x.options());
  const at::Tensor gradBias = hasBias ? dy.sum(0) : at::empty({0}, weight.options());
  return {gradX, gradWeight, gradBias, (inner / sigma).reshape(gamma.sizes())};
}
} // namespace attn::torchop
