// The normalizer option of Attention, parsed, and the variant text handed to attn::attention:
// a built-in name, or `mlir:` IR generated here when a sliding window or ALiBi is requested.
#ifndef MODELS_ATTENTIONVARIANT_H
#define MODELS_ATTENTIONVARIANT_H

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>

namespace attn::models {

struct NormalizerSpec {
  /// Softmax, Sigmoid, Relu: the built-ins the Reference backend evaluates. Named: any other
  /// normalizer of the dialect, called by name (compiled backend only). Ir: `mlir:` text.
  enum class Kind { Softmax, Sigmoid, Relu, Named, Ir };
  Kind kind = Kind::Softmax;
  /// Sigmoid: the bias (absent: −ln n); Relu: the scale (absent: 1/n).
  c10::optional<double> parameter;
  /// Softmax, Sigmoid, Relu, Named: the normalizer attribute, for generated IR.
  std::string attribute;
  /// Ir: the module text (without the `mlir:` prefix).
  std::string ir;
};

/// Parses a normalizer name with the dialect's parser (`softmax`, `sigmoid(bias=-3.5)`,
/// `relu(scale=0.01)`, any normalizer the dialect defines) or `mlir:...`. Throws c10::Error
/// naming the known normalizers.
NormalizerSpec parse_normalizer(const std::string &normalizer);

/// ALiBi slopes 2^(−8(h+1)/num_heads) for h = 0 … num_heads−1, float64 [num_heads].
at::Tensor alibi_slopes(int64_t num_heads);

/// The variant for attn::attention: the normalizer text itself when neither window nor ALiBi
/// is asked for; otherwise generated `mlir:` text (dynamic batch, heads and lengths, static head
/// dim) with `window = W` and/or an ALiBi score_mod over `num_heads` query heads.
std::string attention_variant(const std::string &normalizer, int64_t head_dim, int64_t num_heads,
                              int64_t window, bool alibi);

} // namespace attn::models

#endif // MODELS_ATTENTIONVARIANT_H
