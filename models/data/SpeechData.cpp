#include "models/data/SpeechData.h"

#include "models/CharacterVocabulary.h"
#include "models/train/Config.h"

#include <cstring>
#include <filesystem>
#include <fstream>

namespace attn::data {
namespace fs = std::filesystem;
using train::UsageError;

torch::Tensor readWav(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw UsageError("cannot open WAV '" + path + "'");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    return v;
  };
  auto u16 = [&](size_t at) {
    uint16_t v;
    std::memcpy(&v, bytes.data() + at, 2);
    return v;
  };
  if (bytes.size() < 12 || std::memcmp(bytes.data(), "RIFF", 4) || std::memcmp(bytes.data() + 8, "WAVE", 4))
    throw UsageError("'" + path + "' is not a RIFF/WAVE file");
  uint16_t format = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  size_t pos = 12, dataAt = 0, dataSize = 0;
  while (pos + 8 <= bytes.size()) {
    uint32_t chunkSize = u32(pos + 4);
    if (!std::memcmp(bytes.data() + pos, "fmt ", 4) && pos + 24 <= bytes.size()) {
      format = u16(pos + 8);
      channels = u16(pos + 10);
      rate = u32(pos + 12);
      bits = u16(pos + 22);
    } else if (!std::memcmp(bytes.data() + pos, "data", 4)) {
      dataAt = pos + 8;
      dataSize = std::min<size_t>(chunkSize, bytes.size() - dataAt);
      break;
    }
    pos += 8 + chunkSize + (chunkSize & 1);
  }
  if (format != 1 || bits != 16 || channels == 0 || !dataAt)
    throw UsageError("'" + path + "': only 16-bit PCM WAV is supported (format " +
                     std::to_string(format) + ", " + std::to_string(bits) + " bits)");
  int64_t frames = int64_t(dataSize / (2 * channels));
  auto samples = torch::empty({frames, int64_t(channels)}, torch::kInt16);
  std::memcpy(samples.data_ptr<int16_t>(), bytes.data() + dataAt, size_t(frames) * 2 * channels);
  auto wave = samples.to(torch::kFloat32).mean(1) / 32768.0;
  if (rate != 16000 && frames > 1) {
    int64_t target = std::max<int64_t>(1, frames * 16000 / int64_t(rate));
    wave = torch::nn::functional::interpolate(
               wave.view({1, 1, frames}),
               torch::nn::functional::InterpolateFuncOptions()
                   .size(std::vector<int64_t>{target})
                   .mode(torch::kLinear)
                   .align_corners(false))
               .view({target});
  }
  return wave.contiguous();
}

std::vector<Utterance> loadTranscriptList(const std::string &listPath) {
  std::ifstream in(listPath);
  if (!in)
    throw UsageError("cannot read transcript list '" + listPath +
                     "' (lines of `path<TAB>transcript`; the built-in lists come from "
                     "scripts/prepare-data.sh BUILD_DIR)");
  fs::path base = fs::path(listPath).parent_path();
  std::vector<Utterance> out;
  std::string line;
  int64_t lineNumber = 0;
  while (std::getline(in, line)) {
    ++lineNumber;
    if (line.empty() || line[0] == '#')
      continue;
    auto tab = line.find('\t');
    if (tab == std::string::npos)
      throw UsageError(listPath + ":" + std::to_string(lineNumber) +
                       ": expected `path<TAB>transcript`");
    fs::path wav = line.substr(0, tab);
    if (wav.is_relative())
      wav = base / wav;
    out.push_back({readWav(wav.string()), line.substr(tab + 1), wav.string()});
  }
  if (out.empty())
    throw UsageError("transcript list '" + listPath + "' has no utterances");
  return out;
}

SpeechSplits loadSpeech(const std::string &dataset, const std::string &dataRoot,
                        const std::string &trainList, const std::string &testList) {
  SpeechSplits splits;
  if (dataset == "spoken-digits") {
    splits.train = loadTranscriptList(dataRoot + "/spoken-digits/train.tsv");
    splits.test = loadTranscriptList(dataRoot + "/spoken-digits/test.tsv");
  } else if (dataset == "pocketsphinx") {
    splits.train = loadTranscriptList(dataRoot + "/pocketsphinx/all.tsv");
    splits.test = splits.train;
  } else if (dataset == "list") {
    if (trainList.empty() || testList.empty())
      throw UsageError("--dataset=list needs --train-list and --test-list");
    splits.train = loadTranscriptList(trainList);
    splits.test = loadTranscriptList(testList);
  } else {
    throw UsageError("unknown speech dataset '" + dataset + "'");
  }
  return splits;
}

SpeechBatch collateSpeech(const std::vector<Utterance> &utterances, const torch::Tensor &indices) {
  SpeechBatch batch;
  int64_t b = indices.size(0), maxSamples = 0, maxChars = 1;
  std::vector<torch::Tensor> targets;
  auto idx = indices.accessor<int64_t, 1>();
  for (int64_t i = 0; i < b; ++i) {
    const auto &u = utterances.at(size_t(idx[i]));
    maxSamples = std::max(maxSamples, u.waveform.size(0));
    targets.push_back(models::CharacterVocabulary::encode(u.transcript));
    maxChars = std::max(maxChars, targets.back().size(0));
    batch.transcripts.push_back(u.transcript);
  }
  batch.waveforms = torch::zeros({b, maxSamples});
  batch.lengths = torch::empty({b}, torch::kInt64);
  batch.targets = torch::zeros({b, maxChars}, torch::kInt64);
  batch.targetLengths = torch::empty({b}, torch::kInt64);
  for (int64_t i = 0; i < b; ++i) {
    const auto &wave = utterances.at(size_t(idx[i])).waveform;
    batch.waveforms[i].slice(0, 0, wave.size(0)).copy_(wave);
    batch.lengths[i] = wave.size(0);
    batch.targets[i].slice(0, 0, targets[i].size(0)).copy_(targets[i]);
    batch.targetLengths[i] = targets[i].size(0);
  }
  return batch;
}

} // namespace attn::data
