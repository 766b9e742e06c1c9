// The torch op attn::reparam_linear (σReparam): one ATen composite serves the CPU and CUDA keys;
// the Autograd kernel is a custom Function with the closed-form backward, so the in-place update
// of u happens exactly once per call and nothing of the power iteration is recorded.
#include "frontend/torch/ReparamLinear.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

namespace attn {
namespace torchop {
namespace {

constexpr double kNormalizeEps = 1e-12; // as torch.nn.functional.normalize

void checkReparamLinearInputs(const at::Tensor &x, const at::Tensor &weight,
                              const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                              const at::Tensor &u) {
  TORCH_CHECK(weight.dim() == 2, "attn::reparam_linear: weight must be 2-D [out, in], got shape ",
              weight.sizes());
  // Sizes may be symbolic (torch.compile's dynamic shapes): compare SymInts.
  const c10::SymInt out = weight.sym_size(0), in = weight.sym_size(1);
  TORCH_CHECK(out > 0 && in > 0, "attn::reparam_linear: weight must be non-empty, got shape ",
              weight.sizes());
  TORCH_CHECK(x.dim() >= 1 && x.sym_size(-1) == in, "attn::reparam_linear: x must be [..., ", in,
              "] to match weight [", out, ", ", in, "], got shape ", x.sizes());
  TORCH_CHECK(u.dim() == 1 && u.sym_size(0) == in, "attn::reparam_linear: u must be [", in,
              "] (weight's in features), got shape ", u.sizes());
  TORCH_CHECK(gamma.numel() == 1, "attn::reparam_linear: gamma must hold one element, got shape ",
              gamma.sizes());
  TORCH_CHECK(!u.requires_grad(),
              "attn::reparam_linear: u is a buffer updated in place and must not require grad");
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()),
              "attn::reparam_linear: weight must be floating point, got ", weight.scalar_type());
  auto checkSame = [&](const at::Tensor &tensor, const char *name) {
    TORCH_CHECK(tensor.scalar_type() == weight.scalar_type(), "attn::reparam_linear: ", name,
                " has dtype ", tensor.scalar_type(), " but weight has ", weight.scalar_type());
    TORCH_CHECK(tensor.device() == weight.device(), "attn::reparam_linear: ", name, " is on ",
                tensor.device(), " but weight is on ", weight.device());
  };
  checkSame(x, "x");
  checkSame(gamma, "gamma");
  checkSame(u, "u");
  if (bias && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == out,
                "attn::reparam_linear: bias must be [", out,
                "] (weight's out features), got shape ", bias->sizes());
    checkSame(*bias, "bias");
  }
}

at::Tensor normalized(const at::Tensor &vector) {
  return vector / vector.norm().clamp_min(kNormalizeEps);
}

struct PowerIteration {
  at::Tensor v, u, sigma; ///< v [out], u [in] (the u that σ uses), σ = vᵀ·W·u (0-dim)
};

/// One power step, v = normalize(W·u), u' = normalize(Wᵀ·v), σ = vᵀ·W·u', in training and in
/// eval alike (as apple/ml-sigma-reparam's SpectralNormedWeight.get_sigma); only training stores
/// u' into u. Never recorded by autograd.
PowerIteration powerIteration(const at::Tensor &weight, at::Tensor &u, bool training) {
  at::NoGradGuard noGrad;
  const at::Tensor w = weight.detach();
  PowerIteration result;
  result.v = normalized(w.mv(u));
  // A new tensor in both modes: a later training call may update u before this call's
  // backward runs.
  result.u = normalized(w.t().mv(result.v));
  if (training)
    u.copy_(result.u);
  result.sigma = at::dot(result.v, w.mv(result.u));
  return result;
}

at::Tensor scaledWeight(const at::Tensor &weight, const at::Tensor &gamma,
                        const at::Tensor &sigma) {
  return weight * (gamma.reshape({}) / sigma);
}

/// CPU and CUDA: reached below autograd (inference mode, or tensors that need no graph).
at::Tensor reparamLinearKernel(const at::Tensor &x, const at::Tensor &weight,
                               const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                               at::Tensor &u, bool training) {
  checkReparamLinearInputs(x, weight, bias, gamma, u);
  const PowerIteration step = powerIteration(weight, u, training);
  return at::linear(x, scaledWeight(weight, gamma, step.sigma), bias);
}

/// Meta (fake) kernel for torch.compile: y's shape and dtype. u's update changes no metadata.
at::Tensor reparamLinearMeta(const at::Tensor &x, const at::Tensor &weight,
                             const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                             at::Tensor &u, bool) {
  checkReparamLinearInputs(x, weight, bias, gamma, u);
  std::vector<c10::SymInt> sizes(x.sym_sizes().begin(), x.sym_sizes().end());
  sizes.back() = weight.sym_size(0);
  return at::empty_symint(sizes, x.options());
}

class ReparamLinearFunction : public torch::autograd::Function<ReparamLinearFunction> {
public:
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x,
                            const at::Tensor &weight, const c10::optional<at::Tensor> &bias,
                            const at::Tensor &gamma, at::Tensor u, bool training) {
    checkReparamLinearInputs(x, weight, bias, gamma, u);
    const PowerIteration step = powerIteration(weight, u, training);
    const at::Tensor scaled = scaledWeight(weight, gamma, step.sigma);
    ctx->save_for_backward({x, weight, gamma, step.v, step.u, step.sigma, scaled});
    ctx->saved_data["x_needs_grad"] = x.requires_grad();
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return at::linear(x, scaled, bias);
  }

  /// With Ŵ = c·W, c = γ/σ, σ = vᵀWu (u, v constants) and G = ∂L/∂Ŵ = dyᵀ·x:
  ///   dx = dy·Ŵ,  db = Σ dy,  dγ = ⟨G, W⟩/σ,  dW = c·G − (γ/σ²)·⟨G, W⟩·v·uᵀ.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list gradOutputs) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &gamma = saved[2], &v = saved[3],
                     &u = saved[4], &sigma = saved[5], &scaled = saved[6];
    const at::Tensor gradY = gradOutputs[0];
    const c10::SymInt out = weight.sym_size(0), in = weight.sym_size(1);

    const at::Tensor gradY2 = gradY.reshape_symint({-1, out});
    const at::Tensor gradScaled = gradY2.t().mm(x.reshape_symint({-1, in}));
    const at::Tensor inner = (gradScaled * weight).sum();
    const at::Tensor gammaScalar = gamma.reshape({});
    const at::Tensor gradWeight =
        gradScaled * (gammaScalar / sigma) - at::outer(v, u) * (gammaScalar * inner / (sigma * sigma));
    const at::Tensor gradGamma = (inner / sigma).reshape(gamma.sizes());
    const at::Tensor gradX =
        ctx->saved_data["x_needs_grad"].toBool() ? gradY.matmul(scaled) : at::Tensor();
    const at::Tensor gradBias =
        ctx->saved_data["has_bias"].toBool() ? gradY2.sum(0) : at::Tensor();
    // One gradient per forward argument; u and training have none.
    return {gradX, gradWeight, gradBias, gradGamma, at::Tensor(), at::Tensor()};
  }
};

at::Tensor reparamLinearAutograd(const at::Tensor &x, const at::Tensor &weight,
                                 const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                                 at::Tensor &u, bool training) {
  // An absent bias stays c10::nullopt: Function::apply then records no edge for it.
  const c10::optional<at::Tensor> definedBias =
      bias && bias->defined() ? bias : c10::optional<at::Tensor>();
  return ReparamLinearFunction::apply(x, weight, definedBias, gamma, u, training);
}

} // namespace
} // namespace torchop

at::Tensor reparam_linear(const at::Tensor &x, const at::Tensor &weight,
                          const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                          at::Tensor &u, bool training) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("attn::reparam_linear", "")
          .typed<at::Tensor(const at::Tensor &, const at::Tensor &,
                            const c10::optional<at::Tensor> &, const at::Tensor &, at::Tensor &,
                            bool)>();
  return op.call(x, weight, bias, gamma, u, training);
}

} // namespace attn

// The library `attn` itself is defined with attn::attention (AttentionOp.cpp).
TORCH_LIBRARY_FRAGMENT(attn, m) {
  m.def("reparam_linear(Tensor x, Tensor weight, Tensor? bias, Tensor gamma, Tensor(a!) u, "
        "bool training) -> Tensor");
}

TORCH_LIBRARY_IMPL(attn, CPU, m) {
  m.impl("reparam_linear", attn::torchop::reparamLinearKernel);
}

TORCH_LIBRARY_IMPL(attn, CUDA, m) {
  m.impl("reparam_linear", attn::torchop::reparamLinearKernel);
}

TORCH_LIBRARY_IMPL(attn, Meta, m) { m.impl("reparam_linear", attn::torchop::reparamLinearMeta); }

TORCH_LIBRARY_IMPL(attn, Autograd, m) {
  m.impl("reparam_linear", attn::torchop::reparamLinearAutograd);
}
