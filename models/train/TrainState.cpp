#include "models/train/TrainState.h"

#include "models/train/Config.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <filesystem>

namespace attn::train {

void saveTrainState(const TrainState &state, int64_t step, const std::string &path) {
  torch::serialize::OutputArchive archive;
  archive.write("step", torch::tensor({step}, torch::kInt64));
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    archive.write("rng/cpu", generator.get_state());
  }
  for (const auto &[name, module] : state.modules) {
    torch::serialize::OutputArchive child;
    module->save(child);
    archive.write("module/" + name, child);
  }
  for (const auto &[name, optimizer] : state.optimizers) {
    torch::serialize::OutputArchive child;
    optimizer->save(child);
    archive.write("optimizer/" + name, child);
  }
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::string temporary = path + ".tmp";
  archive.save_to(temporary);
  std::filesystem::rename(temporary, path);
}

int64_t loadTrainState(const TrainState &state, const std::string &path) {
  if (!std::filesystem::exists(path))
    throw UsageError("checkpoint '" + path + "' does not exist");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
    torch::Tensor step, rng;
    archive.read("step", step);
    archive.read("rng/cpu", rng);
    for (const auto &[name, module] : state.modules) {
      torch::serialize::InputArchive child;
      archive.read("module/" + name, child);
      module->load(child);
    }
    for (const auto &[name, optimizer] : state.optimizers) {
      torch::serialize::InputArchive child;
      archive.read("optimizer/" + name, child);
      optimizer->load(child);
    }
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng);
    return step.item<int64_t>();
  } catch (const c10::Error &e) {
    throw UsageError("checkpoint '" + path + "' does not match this run's models (" +
                     std::string(e.what_without_backtrace()) + ")");
  }
}

} // namespace attn::train
