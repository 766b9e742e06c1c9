#include "models/train/Progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <sstream>

namespace attn::train {

std::string formatDuration(double seconds) {
  char buffer[32];
  if (!std::isfinite(seconds) || seconds < 0)
    return "?";
  if (seconds < 60)
    std::snprintf(buffer, sizeof buffer, "%.1fs", seconds);
  else if (seconds < 3600)
    std::snprintf(buffer, sizeof buffer, "%dm%02ds", int(seconds) / 60, int(seconds) % 60);
  else
    std::snprintf(buffer, sizeof buffer, "%dh%02dm", int(seconds) / 3600, int(seconds) % 3600 / 60);
  return buffer;
}

ProgressBar::ProgressBar(std::string label, int64_t totalSteps, int64_t firstStep, bool enabled)
    : label_(std::move(label)), total_(totalSteps), first_(firstStep), enabled_(enabled),
      terminal_(isatty(STDERR_FILENO)), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int64_t step, int64_t samples,
                         const std::vector<std::pair<std::string, double>> &values) {
  samples_ += samples;
  if (!enabled_)
    return;
  int64_t percentile = total_ > 0 ? step * 20 / total_ : 0;
  if (!terminal_ && percentile == lastPrintedPercentile_ && step != total_)
    return;
  lastPrintedPercentile_ = percentile;

  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  int64_t done = step - first_;
  double perStep = done > 0 ? elapsed / done : NAN;
  double eta = perStep * double(total_ - step);
  double throughput = elapsed > 0 ? samples_ / elapsed : 0;

  constexpr int width = 24;
  int filled = total_ > 0 ? int(width * step / total_) : 0;
  std::ostringstream line;
  line << label_ << " [" << std::string(filled, '#') << std::string(width - filled, '.') << "] "
       << step << "/" << total_;
  for (const auto &[name, value] : values) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, " %s %.4g", name.c_str(), value);
    line << buffer;
  }
  char tail[96];
  std::snprintf(tail, sizeof tail, " | %.0f samples/s | ETA %s", throughput,
                formatDuration(eta).c_str());
  line << tail;
  if (terminal_)
    std::fprintf(stderr, "\r\033[K%s", line.str().c_str());
  else
    std::fprintf(stderr, "%s\n", line.str().c_str());
  std::fflush(stderr);
  open_ = terminal_;
}

void ProgressBar::finish() {
  if (open_)
    std::fprintf(stderr, "\n");
  open_ = false;
}

} // namespace attn::train
