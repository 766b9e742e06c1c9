// Multi-head self-attention whose core is the compiled op attn::attention.
#ifndef MODELS_ATTENTION_H
#define MODELS_ATTENTION_H

#include "models/Projection.h"

#include <torch/nn/modules/common.h>
#include <torch/nn/modules/container/any_value.h>
#include <torch/nn/modules/normalization.h>

#include <c10/util/Optional.h>

#include <string>

namespace attn::models {

/// Where the attention core runs: the JIT-compiled op attn::attention, or plain LibTorch math
/// (models/ReferenceAttention.h) computing the same function — for tests and diagnostics.
enum class AttentionBackend { Compiled, Reference };

struct AttentionOptions {
  AttentionOptions(int64_t embed_dim = 0, int64_t num_heads = 1);

  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_heads);
  /// Key/value heads (GQA); 0 means num_heads. Must divide num_heads.
  TORCH_ARG(int64_t, num_kv_heads) = 0;
  /// Head dim; 0 means embed_dim / num_heads.
  TORCH_ARG(int64_t, head_dim) = 0;
  /// `softmax`, `sigmoid` (bias −ln n, n = number of keys), `sigmoid(bias=-3.5)`, `relu`
  /// (relu(s)/n), `relu(scale=0.01)`, or `mlir:` + module text holding an attn.attention
  /// (its element type f32, its head dims static and equal to head_dim).
  TORCH_ARG(std::string, normalizer) = "softmax";
  /// Multiplies q·kᵀ; absent means 1/sqrt(head_dim) (or the IR's own scale).
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
  /// LayerNorm over the head dim of q and k (as the sigmoid-attention configurations use).
  TORCH_ARG(bool, qk_norm) = false;
  /// Rotary position embedding on q and k (rotate-half over the head dim).
  TORCH_ARG(bool, rope) = false;
  TORCH_ARG(double, rope_base) = 10000.0;
  /// ALiBi: score − slope_h·|i − j| with slope_h = 2^(−8(h+1)/num_heads), as a score_mod.
  TORCH_ARG(bool, alibi) = false;
  /// Key j > query i masked (top-left aligned, as torch SDPA).
  TORCH_ARG(bool, causal) = false;
  /// Sliding window: keys with i − window ≤ j (and j ≤ i + window when not causal); 0 = off.
  TORCH_ARG(int64_t, window) = 0;
  /// One [E → (Hq + 2·Hkv)·D] projection instead of three.
  TORCH_ARG(bool, fused_qkv) = true;
  TORCH_ARG(bool, qkv_bias) = true;
  TORCH_ARG(bool, sigma_reparam) = false;
  TORCH_ARG(AttentionBackend, backend) = AttentionBackend::Compiled;
  /// After each forward, keep the mean attention entropy per head (σReparam's diagnostic),
  /// computed by an explicit LibTorch evaluation of the attention probabilities.
  TORCH_ARG(bool, record_entropy) = false;
};

/// x [B, S, E] → [B, S, E]. With `key_lengths` [B] (integer), sample b attends only to its first
/// key_lengths[b] keys: one call of the op with its kv_lengths for the whole batch — exact for
/// every normalizer (the sigmoid bias −ln n sees n = that length) and free of recompiles, since
/// kernels never specialise on lengths. (The reference backend and record_entropy run once per
/// group of samples sharing a length, on exactly those keys; so does the compiled backend under
/// ATTN_MODELS_PER_LENGTH_CALLS=1, the path before kv_lengths, kept for measuring the two.) Rows
/// of padded queries are computed as if they were real (callers mask them downstream).
class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
public:
  AttentionImpl(int64_t embed_dim, int64_t num_heads)
      : AttentionImpl(AttentionOptions(embed_dim, num_heads)) {}
  explicit AttentionImpl(AttentionOptions options);

  void reset() override;
  void pretty_print(std::ostream &stream) const override;

  torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &key_lengths = {});

  /// [num_heads] float32: mean over samples and queries of the entropy of each query's
  /// attention distribution (p normalised to sum 1) in the last forward; empty unless
  /// record_entropy is set.
  const torch::Tensor &last_entropy() const { return last_entropy_; }
  /// The variant passed to attn::attention: a built-in name or generated `mlir:` text.
  const std::string &variant() const { return variant_; }

  AttentionOptions options;
  /// fused_qkv: `qkv` is set; otherwise `query`, `key` and `value`.
  Projection qkv{nullptr}, query{nullptr}, key{nullptr}, value{nullptr}, output{nullptr};
  torch::nn::LayerNorm query_norm{nullptr}, key_norm{nullptr};

protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})

private:
  std::string variant_;
  torch::Tensor last_entropy_;
};
TORCH_MODULE(Attention);

} // namespace attn::models

#endif // MODELS_ATTENTION_H
