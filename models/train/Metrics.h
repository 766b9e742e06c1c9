// Metrics of a run as metrics.csv (one column per declared name, empty where a row lacks it)
// and metrics.jsonl (one object per row, only the values it has), plus PNG plots via gnuplot.
#ifndef MODELS_TRAIN_METRICS_H
#define MODELS_TRAIN_METRICS_H

#include <cstdint>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace attn::train {

class MetricsLog {
public:
  /// Creates `dir`/metrics.{csv,jsonl}. With `resumeStep`, keeps the rows of an earlier run up
  /// to and including that step and appends after them, so a resumed run's files read as one run.
  MetricsLog(const std::string &dir, std::vector<std::string> columns,
             std::optional<int64_t> resumeStep = std::nullopt);

  void write(int64_t step, const std::map<std::string, double> &values);
  const std::string &csvPath() const { return csvPath_; }
  const std::vector<std::string> &columns() const { return columns_; }

private:
  std::string csvPath_, jsonlPath_;
  std::vector<std::string> columns_;
  std::ofstream csv_, jsonl_;
};

/// Plots each group of columns of a metrics CSV against `step` into one panel of `png`
/// (e.g. {{"train_loss"}, {"test_accuracy"}}). Returns false (with a warning on stderr) when
/// gnuplot is missing or fails: plots are a convenience, never a reason to lose a run.
bool plotMetrics(const std::string &csvPath, const std::string &png, const std::string &title,
                 const std::vector<std::vector<std::string>> &panels);

/// Reads the values of `column` from a metrics.jsonl, by step (used by tests and resume checks).
std::map<int64_t, double> readJsonlColumn(const std::string &path, const std::string &column);

} // namespace attn::train

#endif // MODELS_TRAIN_METRICS_H
