// JIT-compiled σReparam linear kernels (attn.reparam_linear through attn-lower-reparam-linear):
// a forward (power step, σ, y = (γ/σ)·x·Wᵀ + b) and a backward (dx, dW with the σ term, dγ,
// db). The products run on the host GEMM that the embedding installs (the torch layer
// installs LibTorch's); the generated code does everything around them. Free of MLIR and
// torch types.
#ifndef RUNTIME_REPARAMKERNELS_H
#define RUNTIME_REPARAMKERNELS_H

#include <cstdint>
#include <memory>
#include <string>

namespace attn::runtime {

enum class ReparamDtype { Float32, Float64 };

/// rows x cols, `rowStride` elements between rows, unit stride along a row.
struct ReparamMatrix {
  void *data = nullptr;
  int64_t rows = 0, cols = 0, rowStride = 0;
};
/// A contiguous vector.
struct ReparamVector {
  void *data = nullptr;
  int64_t size = 0;
};

/// What the kernels specialize on: never the sizes (N, In and Out are run-time arguments).
struct ReparamSpec {
  ReparamDtype dtype = ReparamDtype::Float32;
  bool bias = true;
  bool training = false;
  std::string cacheKey() const;
};

/// x [N, In], weight [Out, In], bias [Out] (ignored without `bias`), gamma [1], u [In]
/// (training: overwritten by u'), y [N, Out], v [Out] and uNext [In] (the power step's
/// vectors, which the backward takes), scales [2] = {σ, γ/σ}. All written but x, weight, bias,
/// gamma.
struct ReparamForwardArgs {
  ReparamMatrix x, weight;
  ReparamVector bias, gamma, u;
  ReparamMatrix y;
  ReparamVector v, uNext, scales;
};
/// gradY [N, Out]; x, weight, gamma, v, uNext and scales as the forward left them; gradX
/// [N, In] (written only when computeGradX), gradWeight [Out, In], gradBias [Out] (with
/// `bias`), gradGamma [1].
struct ReparamBackwardArgs {
  ReparamMatrix gradY, x, weight;
  ReparamVector gamma, v, uNext, scales;
  ReparamMatrix gradX, gradWeight;
  ReparamVector gradBias, gradGamma;
  bool computeGradX = true;
};

/// One product the kernels ask for: c = alpha·op(a)·op(b) + bias, op transposing when asked,
/// bias broadcast over c's rows (size 0: none). c never aliases a or b.
struct HostGemmCall {
  ReparamDtype dtype;
  ReparamMatrix a, b;
  ReparamVector bias;
  ReparamMatrix c;
  double alpha;
  bool transposeA, transposeB;
};
/// May throw; the kernel call that asked then throws the same message as std::runtime_error.
using HostGemm = void (*)(const HostGemmCall &);
/// Installs the GEMM that every σReparam kernel calls (process-wide; the torch layer installs
/// LibTorch's when it loads).
void setHostGemm(HostGemm gemm);

class ReparamKernels {
public:
  virtual ~ReparamKernels() = default;
  /// Each kernel is compiled (or read from the disk cache) on its first call; thread-safe.
  /// Throws CompileError, or std::runtime_error with the host GEMM's message.
  virtual void forward(const ReparamForwardArgs &args) const = 0;
  virtual void backward(const ReparamBackwardArgs &args) const = 0;
  /// Milliseconds the forward kernel took to become callable (disk cache or compiler,
  /// loading); 0 before the first forward.
  virtual double compileMillis() const = 0;
};

/// The kernels of `spec` (their IR and key; each kernel compiles on its first call), one per
/// key however many threads ask. Throws CompileError (runtime/CpuKernels.h), also when no
/// host GEMM is installed.
std::shared_ptr<const ReparamKernels> getReparamKernels(const ReparamSpec &spec);

} // namespace attn::runtime

#endif // RUNTIME_REPARAMKERNELS_H
