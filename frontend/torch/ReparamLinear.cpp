// The torch op attn::reparam_linear (σReparam). Its work is two internal ops, which the
// Autograd kernel calls below autograd (so that Meta/fake kernels trace them):
//   _reparam_linear_forward  -> y, v, u', {σ, γ/σ}  (training: u ← u' in place)
//   _reparam_linear_backward -> dx, dW (with the σ term), db, dγ
// On the CPU they run the JIT-compiled attn.reparam_linear (ReparamLinearCpu.cpp); on CUDA the
// same formulas in ATen (ReparamLinearAten.cpp).
#include "frontend/torch/ReparamLinear.h"
#include "frontend/torch/ReparamLinearKernels.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

namespace attn {
namespace torchop {

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

namespace {
ReparamForwardResult forwardMeta(const at::Tensor &x, const at::Tensor &weight,
                                 const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                                 at::Tensor &u, bool) {
  checkReparamLinearInputs(x, weight, bias, gamma, u);
  std::vector<c10::SymInt> sizes(x.sym_sizes().begin(), x.sym_sizes().end());
  sizes.back() = weight.sym_size(0);
  return {at::empty_symint(sizes, x.options()),
          at::empty_symint({weight.sym_size(0)}, weight.options()),
          at::empty_symint({weight.sym_size(1)}, weight.options()), at::empty({2}, weight.options())};
}

ReparamBackwardResult backwardMeta(const at::Tensor &gradY, const at::Tensor &x,
                                   const at::Tensor &weight, const at::Tensor &gamma,
                                   const at::Tensor &, const at::Tensor &, const at::Tensor &,
                                   bool hasBias, bool needsGradX) {
  return {needsGradX ? at::empty_symint(x.sym_sizes(), x.options())
                     : at::empty_symint({0, weight.sym_size(1)}, x.options()),
          at::empty_symint(weight.sym_sizes(), weight.options()),
          hasBias ? at::empty_symint({weight.sym_size(0)}, weight.options())
                  : at::empty({0}, weight.options()),
          at::empty_symint(gamma.sym_sizes(), gamma.options())};
}

ReparamForwardResult callForward(const at::Tensor &x, const at::Tensor &weight,
                                 const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                                 at::Tensor &u, bool training) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attn::_reparam_linear_forward", "")
                             .typed<decltype(reparamForwardCpu)>();
  return op.call(x, weight, bias, gamma, u, training);
}

ReparamBackwardResult callBackward(const at::Tensor &gradY, const at::Tensor &x,
                                   const at::Tensor &weight, const at::Tensor &gamma,
                                   const at::Tensor &v, const at::Tensor &uNext,
                                   const at::Tensor &scales, bool hasBias, bool needsGradX) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attn::_reparam_linear_backward", "")
                             .typed<decltype(reparamBackwardCpu)>();
  return op.call(gradY, x, weight, gamma, v, uNext, scales, hasBias, needsGradX);
}

/// Below autograd (inference mode, or tensors that need no graph): the forward op's y.
at::Tensor reparamLinearKernel(const at::Tensor &x, const at::Tensor &weight,
                               const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                               at::Tensor &u, bool training) {
  return std::get<0>(callForward(x, weight, bias, gamma, u, training));
}

at::Tensor reparamLinearMeta(const at::Tensor &x, const at::Tensor &weight,
                             const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                             at::Tensor &u, bool training) {
  return std::get<0>(forwardMeta(x, weight, bias, gamma, u, training));
}

/// Saves what the backward kernel reads: x, W, γ and the power step's v, u', {σ, γ/σ} (u, v
/// constants of the gradient, as the reference computes them without grad). The in-place
/// update of u happens once per call, in the forward op.
class ReparamLinearFunction : public torch::autograd::Function<ReparamLinearFunction> {
public:
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x,
                            const at::Tensor &weight, const c10::optional<at::Tensor> &bias,
                            const at::Tensor &gamma, at::Tensor u, bool training) {
    at::AutoDispatchBelowADInplaceOrView belowAutograd;
    auto [y, v, uNext, scales] = callForward(x, weight, bias, gamma, u, training);
    ctx->save_for_backward({x, weight, gamma, v, uNext, scales});
    ctx->saved_data["x_needs_grad"] = x.requires_grad();
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list gradOutputs) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const bool needsGradX = ctx->saved_data["x_needs_grad"].toBool();
    const bool hasBias = ctx->saved_data["has_bias"].toBool();
    auto [gradX, gradWeight, gradBias, gradGamma] =
        callBackward(gradOutputs[0], saved[0], saved[1], saved[2], saved[3], saved[4], saved[5],
                     hasBias, needsGradX);
    // One gradient per forward argument; u and training have none.
    return {needsGradX ? gradX : at::Tensor(), gradWeight, hasBias ? gradBias : at::Tensor(),
            gradGamma, at::Tensor(), at::Tensor()};
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
  m.def("_reparam_linear_forward(Tensor x, Tensor weight, Tensor? bias, Tensor gamma, "
        "Tensor(a!) u, bool training) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("_reparam_linear_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor gamma, "
        "Tensor v, Tensor u_next, Tensor scales, bool has_bias, bool needs_grad_x) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(attn, CPU, m) {
  m.impl("reparam_linear", attn::torchop::reparamLinearKernel);
  m.impl("_reparam_linear_forward", attn::torchop::reparamForwardCpu);
  m.impl("_reparam_linear_backward", attn::torchop::reparamBackwardCpu);
}

TORCH_LIBRARY_IMPL(attn, CUDA, m) {
  m.impl("reparam_linear", attn::torchop::reparamLinearKernel);
  m.impl("_reparam_linear_forward", attn::torchop::reparamForwardAten);
  m.impl("_reparam_linear_backward", attn::torchop::reparamBackwardAten);
}

TORCH_LIBRARY_IMPL(attn, Meta, m) {
  m.impl("reparam_linear", attn::torchop::reparamLinearMeta);
  m.impl("_reparam_linear_forward", attn::torchop::forwardMeta);
  m.impl("_reparam_linear_backward", attn::torchop::backwardMeta);
}

TORCH_LIBRARY_IMPL(attn, Autograd, m) {
  m.impl("reparam_linear", attn::torchop::reparamLinearAutograd);
}
