// A call's captured tensors as the CPU and the GPU kernels take them: checked against what the
// variant's IR declares (count, static sizes), laid out as MLIR memref descriptors
// ({allocated, aligned, offset, sizes..., strides...} per kernel capture, then the fault flags
// as a rank-1 i32 memref), and the faults the kernels flagged turned into a CallError naming the
// capture. One implementation for both backends: the CPU passes a pointer to each descriptor,
// the GPU each descriptor word as a kernel parameter. Internal to the runtime; free of MLIR.
#ifndef RUNTIME_CAPTUREBINDER_H
#define RUNTIME_CAPTUREBINDER_H

#include "runtime/CpuKernels.h"

#include <string>
#include <vector>

namespace attn::runtime {

/// "[2, ?, 9]" (-1 prints as ?).
std::string shapeText(const std::vector<int64_t> &sizes);

/// Where the kernels find the fault flags and, for an empty capture, a readable zero. Absent
/// (nullptr): the host (the CaptureArguments' own flags; a static zero).
struct CapturePlacement {
  void *faultFlags = nullptr;
  const void *emptyCapture = nullptr;
};

/// Lays out a call's captures as the kernels' descriptors (friend of CaptureArguments).
class CaptureBinder {
public:
  /// `views` in the call's order; `callIndex[j]`: the call capture of kernel capture j.
  /// Throws CallError when the count or a size disagrees with `declarations`.
  static CaptureArguments bind(const std::vector<CaptureDeclaration> &declarations,
                               const std::vector<size_t> &callIndex,
                               const std::vector<CaptureView> &views, const std::string &label,
                               const CapturePlacement &placement = {});

  /// The gradient buffers of the f32 kernel captures, in kernel order (no fault flags).
  static CaptureArguments bindGradients(const std::vector<CaptureDeclaration> &declarations,
                                        const std::vector<size_t> &callIndex,
                                        const std::vector<CaptureView> &gradients,
                                        const std::string &label);

  /// Throws CallError naming the first capture whose fault flag is set.
  static void checkFaults(const std::vector<CaptureDeclaration> &declarations,
                          const CaptureArguments &bound);

  /// The address of every descriptor word, in the kernels' order: the expanded memref
  /// parameters of a GPU launch. Valid while `bound` lives.
  static std::vector<void *> parameterAddresses(const CaptureArguments &bound);
  /// The host copy of the fault flags (one int32 per kernel capture): a GPU call reads the
  /// device flags back into it before checkFaults.
  static int32_t *hostFaultFlags(CaptureArguments &bound) { return bound.fault_.data(); }
  static size_t faultFlagCount(const CaptureArguments &bound) { return bound.fault_.size(); }
};

} // namespace attn::runtime

#endif // RUNTIME_CAPTUREBINDER_H
