// The CTC output alphabet of SpeechTransformer: blank (0), space, apostrophe, a–z.
#ifndef MODELS_CHARACTERVOCABULARY_H
#define MODELS_CHARACTERVOCABULARY_H

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace attn::models {

class CharacterVocabulary {
public:
  static constexpr int64_t kBlank = 0;
  /// blank + " '" + a–z.
  static constexpr int64_t kSize = 29;

  /// Lower-cases; characters outside the alphabet are dropped. Returns int64 ids [n].
  static at::Tensor encode(const std::string &text);
  /// Ids (no blanks expected) → text.
  static std::string decode(const std::vector<int64_t> &ids);
  /// Best path: argmax per frame, merge repeats, drop blanks. log_probs [T, B, V] (time-major,
  /// as SpeechTransformer returns and ctc_loss takes), lengths [B].
  static std::vector<std::string> greedy_decode(const at::Tensor &log_probs,
                                                const at::Tensor &lengths);
};

} // namespace attn::models

#endif // MODELS_CHARACTERVOCABULARY_H
