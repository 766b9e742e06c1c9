// JIT-compiled CUDA attention kernels for one variant, dtype and device: compiled to PTX by
// codegen's GPU pipeline through runtime::Jit (memory → disk cache → compile), loaded with the
// driver layer, launched on a caller-given stream. Free of MLIR, CUDA and torch types.
#ifndef RUNTIME_GPUKERNELS_H
#define RUNTIME_GPUKERNELS_H

#include "runtime/CpuKernels.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace attn::runtime {

enum class GpuDtype { BFloat16, Float16 };
const char *gpuDtypeName(GpuDtype dtype); ///< "bf16", "f16"

/// A device tensor: base pointer plus sizes and element strides (last stride 1).
template <int Rank> struct DeviceView {
  void *data = nullptr;
  int64_t sizes[Rank] = {};
  int64_t strides[Rank] = {};
};
using DeviceView4 = DeviceView<4>;
using DeviceView3 = DeviceView<3>;
/// kv_lengths on the device: [B] contiguous int64 (VariantSpec::keyLengths).
using DeviceLengths = DeviceView<1>;

/// The captured tensors of one call, on the device (variants whose score_mod or mask regions
/// read captures; VariantSpec::captures).
struct DeviceCaptures {
  /// Per call capture, in the call's order: a device pointer to its elements (contiguous,
  /// row-major, of GpuKernels::captures()[i].element) and its sizes.
  std::vector<CaptureView> views;
  /// Device memory of at least GpuKernels::captureScratchBytes() bytes, 8-byte aligned, for the
  /// fault flags: the call zeroes it on its stream and reads it back after its kernels.
  void *scratch = nullptr;
  /// Kernels compiled with spec.captureGradients, backward only: per call capture, a device
  /// float32 buffer of its sizes (contiguous, row-major) for a floating capture, null data for
  /// an integer one. The call does not zero them: the dQ kernel adds each capture's gradient
  /// into its buffer (atomic adds), so they hold the gradient when they start at 0.
  std::vector<CaptureView> gradients;
};

/// Shapes as in CpuKernels: q [B,Hq,Sq,D], k [B,Hkv,Sk,D], v [B,Hkv,Sk,Dv], o [B,Hq,Sq,Dv] in
/// the compiled dtype; lse and delta [B,Hq,Sq] float32.
class GpuKernels {
public:
  virtual ~GpuKernels() = default;
  virtual bool rowWise() const = 0;
  virtual double compileMillis() const = 0;
  /// The PTX target the kernels were compiled for ("sm_80", "sm_90a").
  virtual const std::string &target() const = 0;
  /// Rows (queries, or keys for dK/dV) one CTA of a kernel covers; role is "fwd", "bwd_dq",
  /// "bwd_dkdv" or "bwd_delta". 0 when the program has no such kernel.
  virtual int64_t blockRows(const std::string &role) const = 0;

  /// What the variant's IR declares for each capture, in the call's order (empty: none).
  virtual const std::vector<CaptureDeclaration> &captures() const = 0;
  /// Bytes of device scratch (DeviceCaptures::scratch) a call's captures need; 0 without.
  virtual size_t captureScratchBytes() const = 0;

  /// `keyLengths` is given exactly when the variant has key lengths (as on the CPU, the
  /// dK/dV rows at and past a batch's length are left unwritten: the caller zero-fills them).
  /// `captures` is given exactly when the variant reads captures: they are checked against
  /// captures() (CallError) before anything launches, and the call then waits for its stream
  /// to read the fault flags back: a region that indexed outside a capture makes the call a
  /// CallError naming the capture, never a result (the outputs are then garbage).
  virtual void forward(const DeviceView4 &q, const DeviceView4 &k, const DeviceView4 &v,
                       const DeviceView4 &o, const DeviceView3 &lse, void *stream,
                       const DeviceLengths *keyLengths = nullptr,
                       const DeviceCaptures *captures = nullptr) const = 0;
  /// `delta` is scratch the row-wise normalizers fill with rowsum(dO * O) first. Kernels
  /// compiled with spec.captureGradients also take `captures->gradients` (CallError without).
  virtual void backward(const DeviceView4 &q, const DeviceView4 &k, const DeviceView4 &v,
                        const DeviceView4 &o, const DeviceView4 &gradOut, const DeviceView3 &lse,
                        const DeviceView3 &delta, const DeviceView4 &gradQuery,
                        const DeviceView4 &gradKey, const DeviceView4 &gradValue, void *stream,
                        const DeviceLengths *keyLengths = nullptr,
                        const DeviceCaptures *captures = nullptr) const = 0;
};

/// The kernels of `spec` for `dtype` on CUDA device `device`, compiled and loaded on first
/// use (once per key and device however many threads ask). Throws CompileError for variants
/// the GPU backend cannot build and cuda::CudaError when the driver fails.
std::shared_ptr<const GpuKernels> getGpuKernels(const VariantSpec &spec, GpuDtype dtype,
                                                int device);

} // namespace attn::runtime

#endif // RUNTIME_GPUKERNELS_H
