// A one-line progress bar on stderr: step, named values (loss, ...), throughput and ETA.
// On a terminal it redraws in place; otherwise it prints a line about every 5 % of the run.
#ifndef MODELS_TRAIN_PROGRESS_H
#define MODELS_TRAIN_PROGRESS_H

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace attn::train {

class ProgressBar {
public:
  /// `firstStep` > 0 when resuming: throughput and ETA count only the steps run here.
  ProgressBar(std::string label, int64_t totalSteps, int64_t firstStep, bool enabled);
  /// Called after `step` (1-based) finished; `samples` is how many examples it consumed.
  void update(int64_t step, int64_t samples, const std::vector<std::pair<std::string, double>> &values);
  /// Ends the line so later output starts on a fresh one.
  void finish();

private:
  std::string label_;
  int64_t total_, first_;
  bool enabled_, terminal_;
  int64_t samples_ = 0;
  int64_t lastPrintedPercentile_ = -1;
  std::chrono::steady_clock::time_point start_;
  bool open_ = false;
};

/// "1m05s" / "12.3s".
std::string formatDuration(double seconds);

} // namespace attn::train

#endif // MODELS_TRAIN_PROGRESS_H
