#include "models/CharacterVocabulary.h"

#include <ATen/ATen.h>

#include <cctype>

namespace attn::models {
namespace {
// Index i + 1 holds kAlphabet[i]; 0 is the CTC blank.
constexpr const char kAlphabet[] = " 'abcdefghijklmnopqrstuvwxyz";
static_assert(sizeof(kAlphabet) - 1 + 1 == CharacterVocabulary::kSize);

int64_t idOf(char character) {
  for (int64_t index = 0; kAlphabet[index] != '\0'; ++index)
    if (kAlphabet[index] == character)
      return index + 1;
  return -1;
}
} // namespace

at::Tensor CharacterVocabulary::encode(const std::string &text) {
  std::vector<int64_t> ids;
  for (char character : text) {
    const int64_t id = idOf(static_cast<char>(std::tolower(static_cast<unsigned char>(character))));
    if (id > 0)
      ids.push_back(id);
  }
  return at::tensor(ids, at::kLong);
}

std::string CharacterVocabulary::decode(const std::vector<int64_t> &ids) {
  std::string text;
  for (int64_t id : ids) {
    TORCH_CHECK(id > 0 && id < kSize, "CharacterVocabulary::decode: id ", id,
                " is not a character (1 … ", kSize - 1, ")");
    text.push_back(kAlphabet[id - 1]);
  }
  return text;
}

std::vector<std::string> CharacterVocabulary::greedy_decode(const at::Tensor &log_probs,
                                                            const at::Tensor &lengths) {
  TORCH_CHECK(log_probs.dim() == 3 && lengths.dim() == 1 && lengths.size(0) == log_probs.size(1),
              "greedy_decode: log_probs must be [T, B, V] and lengths [B], got ", log_probs.sizes(),
              " and ", lengths.sizes());
  const at::Tensor best = log_probs.argmax(-1).to(at::kCPU, at::kLong).contiguous(); // [T, B]
  const at::Tensor frames = lengths.to(at::kCPU, at::kLong).contiguous();
  std::vector<std::string> texts;
  for (int64_t sample = 0; sample < best.size(1); ++sample) {
    std::vector<int64_t> ids;
    int64_t previous = kBlank;
    const int64_t length = std::min(frames[sample].item<int64_t>(), best.size(0));
    for (int64_t time = 0; time < length; ++time) {
      const int64_t id = best[time][sample].item<int64_t>();
      if (id != kBlank && id != previous)
        ids.push_back(id);
      previous = id;
    }
    texts.push_back(decode(ids));
  }
  return texts;
}

} // namespace attn::models
