// Speech data: 16-bit PCM WAV files with transcripts, listed one utterance per line as
// `path<TAB>transcript` (relative paths are relative to the list file). Built-in lists come from
// scripts/prepare-data.sh: spoken digits (espeak-ng + sox) and the pocketsphinx test utterances.
#ifndef MODELS_DATA_SPEECHDATA_H
#define MODELS_DATA_SPEECHDATA_H

#include <torch/torch.h>

#include <string>
#include <vector>

namespace attn::data {

struct Utterance {
  torch::Tensor waveform; ///< [T] float32 in [-1, 1] at 16 kHz
  std::string transcript;
  std::string path;
};

/// Reads a mono or stereo (averaged) 16-bit PCM WAV; other rates are resampled to 16 kHz
/// (linear interpolation).
torch::Tensor readWav(const std::string &path);
std::vector<Utterance> loadTranscriptList(const std::string &listPath);

struct SpeechSplits {
  std::vector<Utterance> train, test;
};
/// `spoken-digits` → dataRoot/spoken-digits/{train,test}.tsv; `pocketsphinx` →
/// dataRoot/pocketsphinx/all.tsv for both (10 utterances: a smoke set, too small to learn);
/// `list` → trainList / testList.
SpeechSplits loadSpeech(const std::string &dataset, const std::string &dataRoot,
                        const std::string &trainList, const std::string &testList);

struct SpeechBatch {
  torch::Tensor waveforms; ///< [B, T] zero-padded
  torch::Tensor lengths;   ///< [B] int64 samples
  torch::Tensor targets;   ///< [B, L] int64 character ids, zero-padded
  torch::Tensor targetLengths; ///< [B] int64
  std::vector<std::string> transcripts;
};
SpeechBatch collateSpeech(const std::vector<Utterance> &utterances, const torch::Tensor &indices);

} // namespace attn::data

#endif // MODELS_DATA_SPEECHDATA_H
