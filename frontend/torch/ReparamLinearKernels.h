// The kernels behind attn::reparam_linear's two internal ops, `_reparam_linear_forward` and
// `_reparam_linear_backward`, one set per device (ReparamLinearCpu.cpp: the JIT-compiled
// attn.reparam_linear; ReparamLinearCuda.cpp: ATen). Internal to libattn_torch.
#ifndef FRONTEND_TORCH_REPARAMLINEARKERNELS_H
#define FRONTEND_TORCH_REPARAMLINEARKERNELS_H

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace attn::torchop {

/// Rejects bad arguments with a c10::Error naming them (all devices, Meta included).
void checkReparamLinearInputs(const at::Tensor &x, const at::Tensor &weight,
                              const c10::optional<at::Tensor> &bias, const at::Tensor &gamma,
                              const at::Tensor &u);

/// (y [..., Out], v [Out], u' [In], scales [2] = {σ, γ/σ}); in training u ← u'.
using ReparamForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
/// (dx [..., In] or [0] when not asked, dW [Out, In], db [Out] or [0] without bias, dγ like γ).
using ReparamBackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

ReparamForwardResult reparamForwardCpu(const at::Tensor &x, const at::Tensor &weight,
                                       const c10::optional<at::Tensor> &bias,
                                       const at::Tensor &gamma, at::Tensor &u, bool training);
ReparamBackwardResult reparamBackwardCpu(const at::Tensor &gradY, const at::Tensor &x,
                                         const at::Tensor &weight, const at::Tensor &gamma,
                                         const at::Tensor &v, const at::Tensor &uNext,
                                         const at::Tensor &scales, bool hasBias,
                                         bool needsGradX);

ReparamForwardResult reparamForwardAten(const at::Tensor &x, const at::Tensor &weight,
                                        const c10::optional<at::Tensor> &bias,
                                        const at::Tensor &gamma, at::Tensor &u, bool training);
ReparamBackwardResult reparamBackwardAten(const at::Tensor &gradY, const at::Tensor &x,
                                          const at::Tensor &weight, const at::Tensor &gamma,
                                          const at::Tensor &v, const at::Tensor &uNext,
                                          const at::Tensor &scales, bool hasBias,
                                          bool needsGradX);

} // namespace attn::torchop

#endif // FRONTEND_TORCH_REPARAMLINEARKERNELS_H
