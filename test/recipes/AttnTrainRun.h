// attn-train as a user runs it, for the end-to-end recipe tests: run a command line, read a
// metric column, the small data set's options.
#ifndef TEST_RECIPES_ATTNTRAINRUN_H
#define TEST_RECIPES_ATTNTRAINRUN_H

#include "models/train/Metrics.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace attn_train_run {
namespace fs = std::filesystem;

struct Result {
  int exitCode;
  std::string output;
};

inline Result attnTrain(const std::string &arguments) {
  std::string command = std::string(ATTN_TRAIN_BINARY) + " " + arguments + " 2>&1";
  FILE *pipe = popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe))
    output.append(buffer, n);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

/// Runs `launch --rank=0` here and `launch --rank=1` on a thread: one 2-process run.
inline std::pair<Result, Result> attnTrainTwoRanks(const std::string &launch) {
  Result rank1;
  std::thread worker([&] { rank1 = attnTrain(launch + " --rank=1"); });
  Result rank0 = attnTrain(launch + " --rank=0");
  worker.join();
  return {rank0, rank1};
}

inline std::string freshDir(const std::string &name) {
  auto dir = fs::temp_directory_path() / ("attn-recipes-" + std::to_string(getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Small and fast: 8×8 digits, a one-block ViT, one thread (so runs are reproducible).
inline const std::string kDigits = "--dataset=digits --patch-size=2 --embed-dim=32 --depth=1 --heads=2 "
                                   "--batch-size=64 --progress=false --plot=false --threads=1 --warmup-steps=5 ";

inline std::vector<double> column(const std::string &dir, const std::string &name) {
  std::vector<double> values;
  for (const auto &[step, value] : attn::train::readJsonlColumn(dir + "/metrics.jsonl", name))
    values.push_back(value);
  return values;
}

/// The run succeeded and its loss fell (the last three logged values against the first three).
inline void expectLossFalls(const std::string &dir, const Result &result) {
  ASSERT_EQ(result.exitCode, 0) << result.output;
  auto loss = column(dir, "loss");
  ASSERT_GE(loss.size(), 6u) << result.output;
  double first = (loss[0] + loss[1] + loss[2]) / 3;
  double last = (loss[loss.size() - 1] + loss[loss.size() - 2] + loss[loss.size() - 3]) / 3;
  EXPECT_LT(last, first) << "loss did not fall in " << dir;
}

// The SSL recipes' small settings.
inline const std::string kSsl = "--lr=0.01 --crop-min=0.5 --blur-prob=0 --jitter-prob=0 --proj-hidden=64 "
                                "--proj-dim=32 --knn-bank=500 --knn-queries=100 --weight-decay=0 --log-every=5 ";

} // namespace attn_train_run

#endif // TEST_RECIPES_ATTNTRAINRUN_H
