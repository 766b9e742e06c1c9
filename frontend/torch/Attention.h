// The C++ entry point of attn::attention. It calls the op through the dispatcher, so autograd
// records it like any torch op. Linking libattn_torch registers the op.
#ifndef FRONTEND_TORCH_ATTENTION_H
#define FRONTEND_TORCH_ATTENTION_H

#include "runtime/Normalizers.h"

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace attn {

struct AttentionOptions {
  /// `softmax`, `sigmoid`, `sigmoid(bias=-3.5)`, `relu`, `relu(scale=0.01)`, or `mlir:`
  /// followed by the text of a module holding an attn.attention.
  std::string variant = "softmax";
  /// Multiplies q·kᵀ; absent means the variant's own, else 1/sqrt(D).
  std::optional<double> scale;
  /// Masks key j > query i (top-left aligned, as torch SDPA).
  bool causal = false;
  /// [B] integers: batch b attends to its first kv_lengths[b] keys (a padded ragged batch in
  /// one call); keys past the length get zero gradients.
  std::optional<at::Tensor> kvLengths;
  /// The tensors an `mlir:` variant's score_mod and mask regions read (`captures(...)` of its
  /// attn.attention), one per function argument that feeds them, in argument order: a
  /// document id per token, a bias table, per-head slopes. f32 captures take floating tensors,
  /// i32/i64 captures integer or bool tensors (converted, made contiguous); on q's device.
  /// A region that indexes outside a capture makes the call throw. A floating capture that
  /// requires grad gets its gradient (CPU).
  std::vector<at::Tensor> captures;
};

/// q [B, Hq, Sq, D], k [B, Hkv, Sk, D], v [B, Hkv, Sk, Dv] with Hq % Hkv == 0 → [B, Hq, Sq, Dv]
/// in q's dtype (float32, bfloat16, float16 or float64). Throws c10::Error on bad arguments.
at::Tensor attention(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                     const AttentionOptions &options = {});

/// Packed sequences (FlashAttention's varlen layout): q [Tq, Hq, D], k [Tk, Hkv, D],
/// v [Tk, Hkv, Dv] hold N sequences one after another; cuSeqlensQ and cuSeqlensK ([N + 1]
/// integers from 0 to Tq and Tk) say where each starts. Sequence s attends to its own keys only,
/// as its own unpadded call would → [Tq, Hq, Dv]. `options.kvLengths` must be absent (the
/// offsets give the lengths); causal masks within each sequence. CPU tensors.
at::Tensor attention_varlen(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                            const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                            const AttentionOptions &options = {});

/// Blocks until the JIT's background compiles are done: the optimized code of every kernel
/// compiled so far is then in use (the first call of a variant runs quickly compiled code while
/// the optimized object compiles on a background thread; ATTN_TIERED_COMPILE=0 turns that off).
/// A benchmark calls it after its warm-up, so that it times the code a long run gets.
void wait_for_compiles();

/// A normalizer name resolved by the dialect's parser (the one parser of names): `name`, the
/// `parameters` as written, the `attribute` text for IR, `rowWise`.
using NormalizerInfo = runtime::NormalizerInfo;

/// Resolves `softmax`, `sigmoid(bias=-2)`, `relu(scale=0.01)` or any normalizer the dialect
/// defines, with its parameters. Throws c10::Error naming the known ones and the closest.
NormalizerInfo normalizer_info(const std::string &name);

/// The normalizers callable by name, in the dialect's definition order.
std::vector<std::string> normalizer_names();

} // namespace attn

#endif // FRONTEND_TORCH_ATTENTION_H
