// attn::reparam_linear on the CPU: the JIT-compiled attn.reparam_linear kernels
// (runtime/ReparamKernels.h), with LibTorch's GEMM installed as the host GEMM they call for
// the three products.
#include "frontend/torch/ReparamLinearKernels.h"

#include "runtime/ReparamKernels.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace attn::torchop {
namespace {
using runtime::ReparamMatrix;
using runtime::ReparamVector;

/// The products on LibTorch's GEMM (MKL or OpenBLAS, on torch's intra-op threads), alpha as
/// the product's scalar so that no operand is scaled first.
void atenGemm(const runtime::HostGemmCall &call) {
  const at::TensorOptions options =
      at::TensorOptions().dtype(call.dtype == runtime::ReparamDtype::Float64 ? at::kDouble
                                                                            : at::kFloat);
  auto view = [&](const ReparamMatrix &m) {
    return at::from_blob(m.data, {m.rows, m.cols}, {std::max<int64_t>(m.rowStride, 1), 1},
                         options);
  };
  at::Tensor a = view(call.a), b = view(call.b), c = view(call.c);
  if (call.transposeA)
    a = a.t();
  if (call.transposeB)
    b = b.t();
  if (call.bias.size > 0)
    at::addmm_out(c, at::from_blob(call.bias.data, {call.bias.size}, options), a, b, 1,
                  call.alpha);
  else // beta = 0: c's old contents (uninitialized memory) are ignored, NaNs included.
    at::addmm_out(c, c, a, b, 0, call.alpha);
}

const bool gemmInstalled = (runtime::setHostGemm(&atenGemm), true);

/// The dtypes the compiled kernels take. Half-precision parameters (`attn-train
/// --dtype=float16`; autocast keeps σReparam in float32) go to the ATen formulas instead.
bool compiled(const at::Tensor &weight) {
  return weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble;
}

runtime::ReparamDtype dtypeOf(const at::Tensor &tensor) {
  return tensor.scalar_type() == at::kDouble ? runtime::ReparamDtype::Float64
                                             : runtime::ReparamDtype::Float32;
}

/// [rows, cols] with unit stride along a row and rows apart by at least a row: a view when
/// the layout allows, else a contiguous copy.
at::Tensor rowMajor(const at::Tensor &tensor, int64_t cols) {
  at::Tensor matrix = tensor.reshape({-1, cols});
  if (matrix.stride(1) != 1 || matrix.stride(0) < cols)
    matrix = matrix.contiguous();
  return matrix;
}

ReparamMatrix matrixOf(const at::Tensor &m) {
  return {m.data_ptr(), m.size(0), m.size(1), m.stride(0)};
}
ReparamVector vectorOf(const at::Tensor &v) { return {v.data_ptr(), v.numel()}; }

std::shared_ptr<const runtime::ReparamKernels> kernelsFor(runtime::ReparamDtype dtype,
                                                          bool bias, bool training) {
  (void)gemmInstalled;
  runtime::ReparamSpec spec;
  spec.dtype = dtype;
  spec.bias = bias;
  spec.training = training;
  try {
    return runtime::getReparamKernels(spec);
  } catch (const std::exception &error) {
    TORCH_CHECK(false, "attn::reparam_linear: ", error.what());
  }
}
} // namespace

ReparamForwardResult reparamForwardCpu(const at::Tensor &x, const at::Tensor &weight,
                                       const c10::optional<at::Tensor> &bias,
                                       const at::Tensor &gamma, at::Tensor &u, bool training) {
  checkReparamLinearInputs(x, weight, bias, gamma, u);
  if (!compiled(weight))
    return reparamForwardAten(x, weight, bias, gamma, u, training);
  const bool hasBias = bias && bias->defined();
  auto kernels = kernelsFor(dtypeOf(weight), hasBias, training);
  const int64_t out = weight.size(0), in = weight.size(1);
  const at::Tensor x2 = rowMajor(x, in), w = rowMajor(weight, in);
  const at::Tensor b = hasBias ? bias->contiguous() : at::Tensor();
  const at::Tensor g = gamma.reshape({1}).contiguous();
  // In training the kernel stores u' into u itself (into a copy when u is not contiguous).
  at::Tensor uInPlace = u.is_contiguous() ? u : u.contiguous();
  at::Tensor y = at::empty({x2.size(0), out}, x.options());
  at::Tensor v = at::empty({out}, weight.options()), uNext = at::empty({in}, weight.options()),
             scales = at::empty({2}, weight.options());
  runtime::ReparamForwardArgs args;
  args.x = matrixOf(x2);
  args.weight = matrixOf(w);
  if (hasBias)
    args.bias = vectorOf(b);
  args.gamma = vectorOf(g);
  args.u = vectorOf(uInPlace);
  args.y = matrixOf(y);
  args.v = vectorOf(v);
  args.uNext = vectorOf(uNext);
  args.scales = vectorOf(scales);
  try {
    kernels->forward(args);
  } catch (const std::exception &error) {
    TORCH_CHECK(false, error.what());
  }
  if (training && !uInPlace.is_same(u))
    u.copy_(uInPlace);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = out;
  return {y.view(sizes), v, uNext, scales};
}

ReparamBackwardResult reparamBackwardCpu(const at::Tensor &gradY, const at::Tensor &x,
                                         const at::Tensor &weight, const at::Tensor &gamma,
                                         const at::Tensor &v, const at::Tensor &uNext,
                                         const at::Tensor &scales, bool hasBias,
                                         bool needsGradX) {
  if (!compiled(weight))
    return reparamBackwardAten(gradY, x, weight, gamma, v, uNext, scales, hasBias, needsGradX);
  auto kernels = kernelsFor(dtypeOf(weight), hasBias, /*training=*/false);
  const int64_t out = weight.size(0), in = weight.size(1);
  const at::Tensor dy = rowMajor(gradY, out), x2 = rowMajor(x, in), w = rowMajor(weight, in);
  TORCH_CHECK(dy.size(0) == x2.size(0), "attn::_reparam_linear_backward: grad_y has ",
              dy.size(0), " rows but x has ", x2.size(0));
  const at::Tensor g = gamma.reshape({1}).contiguous();
  const at::Tensor vc = v.contiguous(), uc = uNext.contiguous(), sc = scales.contiguous();
  at::Tensor dx = at::empty({needsGradX ? x2.size(0) : 0, in}, x.options());
  at::Tensor dw = at::empty({out, in}, weight.options());
  at::Tensor db = at::empty({hasBias ? out : 0}, weight.options());
  at::Tensor dgamma = at::empty({1}, weight.options());
  runtime::ReparamBackwardArgs args;
  args.gradY = matrixOf(dy);
  args.x = matrixOf(x2);
  args.weight = matrixOf(w);
  args.gamma = vectorOf(g);
  args.v = vectorOf(vc);
  args.uNext = vectorOf(uc);
  args.scales = vectorOf(sc);
  args.gradX = matrixOf(dx);
  args.gradWeight = matrixOf(dw);
  args.gradBias = vectorOf(db);
  args.gradGamma = vectorOf(dgamma);
  args.computeGradX = needsGradX;
  try {
    kernels->backward(args);
  } catch (const std::exception &error) {
    TORCH_CHECK(false, error.what());
  }
  return {needsGradX ? dx.view(x.sizes()) : dx, dw, db, dgamma.view(gamma.sizes())};
}
} // namespace attn::torchop
