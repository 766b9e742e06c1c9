// The C++ entry point of the torch op attn::reparam_linear (σReparam, arXiv:2303.06296, as in
// apple/ml-sigma-reparam). It calls the op through the dispatcher, so autograd records it like
// any torch op. Linking libattn_torch registers the op.
#ifndef FRONTEND_TORCH_REPARAMLINEAR_H
#define FRONTEND_TORCH_REPARAMLINEAR_H

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace attn {

/// y = x·(γ/σ·W)ᵀ + b with σ = vᵀ·W·u estimated by power iteration.
///   training: v = normalize(W·u), u ← normalize(Wᵀ·v) in place (no gradient), then σ = vᵀ·W·u
///             with u, v treated as constants, so the gradient reaches W through σ as well.
///   eval:     u is left as it is; v = normalize(W·u) and σ = vᵀ·W·u.
/// x [..., in], weight [out, in], bias [out] or absent, gamma one element, u [in] — one
/// floating dtype, one device. Returns y [..., out]. Throws c10::Error on bad arguments.
at::Tensor reparam_linear(const at::Tensor &x, const at::Tensor &weight,
                          const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                          at::Tensor &u, bool training);

} // namespace attn

#endif // FRONTEND_TORCH_REPARAMLINEAR_H
