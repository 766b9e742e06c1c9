// Argument checks of the torch op attn::attention. They throw c10::Error (TORCH_CHECK) with
// messages that name the argument, what was expected and what was given (README
// invariant 5: errors are values, not crashes).
#ifndef FRONTEND_TORCH_INPUTCHECKS_H
#define FRONTEND_TORCH_INPUTCHECKS_H

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace attn::torchop {

/// Checks q [B, Hq, Sq, D], k [B, Hkv, Sk, D], v [B, Hkv, Sk, Dv]: ranks, one floating dtype,
/// one CPU or CUDA device, matching sizes, Hq % Hkv == 0, non-empty head dims, and scale > 0.
void checkAttentionInputs(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                          c10::optional<double> scale);

/// Checks kv_lengths, when given: [B] of an integer dtype, on q's device.
void checkKeyLengths(const at::Tensor &q, const c10::optional<at::Tensor> &kvLengths);

/// Checks captured tensors: defined, floating, integer or bool (not complex), on q's device.
/// Their ranks, element kinds and sizes are checked against the variant's IR when it compiles.
void checkCaptures(const at::Tensor &q, at::TensorList captures);

/// Checks the packed (varlen) inputs q [Tq, Hq, D], k [Tk, Hkv, D], v [Tk, Hkv, Dv] and
/// cu_seqlens_q, cu_seqlens_k ([count + 1] integers each, one count, on the CPU or q's device),
/// as far as shapes go (sizes may be symbolic); checkSequenceOffsets checks their values.
void checkPackedInputs(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                       const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                       c10::optional<double> scale);

/// Checks the values of cumulative sequence offsets: they start at 0, never decrease and end
/// at `rows` (Tq or Tk). `name` is the argument's name in messages.
void checkSequenceOffsets(const at::Tensor &offsets, int64_t rows, const char *name);

} // namespace attn::torchop

#endif // FRONTEND_TORCH_INPUTCHECKS_H
