#include "models/train/Run.h"

#include "frontend/torch/Attention.h"

#include "models/train/Progress.h"
#include "models/train/Schedule.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace attn::train {
namespace fs = std::filesystem;

#ifndef ATTN_DEFAULT_DATA_DIR
#define ATTN_DEFAULT_DATA_DIR "data"
#endif

static std::string defaultDataDir() {
  if (const char *env = std::getenv("ATTN_DATA_DIR"); env && *env)
    return env;
  return ATTN_DEFAULT_DATA_DIR;
}

/// `--attention=` takes a normalizer name (any the dialect defines, with parameters) or an
/// .mlir file holding an attn.attention.
static std::string attentionVariantFor(const std::string &option) {
  if (fs::is_regular_file(option)) {
    std::ifstream in(option);
    std::stringstream text;
    text << in.rdbuf();
    return "mlir:" + text.str();
  }
  try {
    attn::normalizer_info(option);
  } catch (const c10::Error &error) {
    throw UsageError("--attention: '" + option + "' is neither an .mlir file nor a normalizer: " +
                     error.msg());
  }
  return option;
}

CommonOptions parseCommonOptions(Config &config, const std::string &recipe,
                                 const RecipeDefaults &defaults) {
  CommonOptions o;
  o.recipe = recipe;
  o.outDir = config.getString("out", "runs/" + recipe, "output folder (metrics, plots, checkpoints)");
  o.dataDir = config.getString("data-dir", defaultDataDir(),
                               "prepared data (scripts/prepare-data.sh; env ATTN_DATA_DIR)");
  o.resume = config.getString("resume", "",
                              "resume from a checkpoint file, or `auto` for OUT/checkpoint.pt if present");
  std::string device = config.getChoice("device", "cpu", {"cpu", "cuda"}, "where to train");
  if (device == "cuda") {
    if (!torch::cuda::is_available())
      throw UsageError("--device=cuda: this LibTorch has no CUDA device available");
    o.device = torch::Device(torch::kCUDA, 0);
  }
  std::string dtype = config.getChoice(
      "dtype", "float32", {"float32", "float64", "bfloat16", "float16"},
      "compute dtype: float32/float64 everywhere; bfloat16 is mixed precision (autocast: products "
      "in bfloat16, float32 master weights, optimizer and EMA updates in float32); float16 casts "
      "the parameters (no loss scaling)");
  o.dtype = dtype == "float64"    ? torch::kFloat64
            : dtype == "float16"  ? torch::kFloat16
                                  : torch::kFloat32;
  if (dtype == "bfloat16")
    o.autocast = torch::kBFloat16;
  o.seed = config.getInt("seed", 0, "seed of initialisation, augmentation and data order");
  o.steps = config.getInt("steps", defaults.steps, "optimizer steps");
  o.batchSize = config.getInt("batch-size", defaults.batchSize, "global batch (all ranks together)");
  o.learningRate = config.getDouble("lr", defaults.learningRate, "peak learning rate (AdamW)");
  o.weightDecay = config.getDouble("weight-decay", defaults.weightDecay, "AdamW weight decay");
  o.warmupSteps = config.getInt("warmup-steps", defaults.warmupSteps, "linear warm-up, then cosine decay");
  o.logEvery = config.getInt("log-every", 10, "write train metrics every N steps");
  o.evalEvery = config.getInt("eval-every", defaults.evalEvery, "evaluate every N steps (0: only at the end)");
  o.checkpointEvery = config.getInt("checkpoint-every", 0, "checkpoint every N steps (0: only at the end)");
  o.threads = config.getInt("threads", 0, "intra-op CPU threads (0: LibTorch's default)");
  o.stopAfter = config.getInt("stop-after", 0, "stop with a checkpoint after N steps of this invocation (0: never)");
  o.progress = config.getBool("progress", true, "progress bar on stderr");
  o.plot = config.getBool("plot", true, "write OUT/metrics.png with gnuplot");
  o.attentionOption = config.getString("attention", "softmax",
                                       "a normalizer name (softmax, sigmoid, relu, sigmoid(bias=B), "
                                       "relu(scale=S), any the dialect defines) or an .mlir file");
  o.attentionVariant = attentionVariantFor(o.attentionOption);
  o.sigmaReparam = config.getBool("sigma-reparam", false, "σReparam for every linear and the patch embedding");
  o.distributed.worldSize = config.getInt("world-size", 1, "data-parallel processes (env WORLD_SIZE)");
  o.distributed.rank = config.getInt("rank", 0, "this process's rank (env RANK)");
  o.distributed.masterAddr = config.getString("master-addr", "127.0.0.1", "rendezvous host (env MASTER_ADDR)");
  o.distributed.masterPort = config.getInt("master-port", 29500, "rendezvous TCP port (env MASTER_PORT)");
  o.distributed = distributedOptionsFromEnvironment(o.distributed);

  auto positive = [](const char *name, int64_t value) {
    if (value <= 0)
      throw UsageError(std::string("--") + name + " must be positive, got " + std::to_string(value));
  };
  positive("steps", o.steps);
  positive("batch-size", o.batchSize);
  positive("log-every", o.logEvery);
  if (o.learningRate <= 0)
    throw UsageError("--lr must be positive");
  if (o.warmupSteps < 0 || o.evalEvery < 0 || o.checkpointEvery < 0 || o.threads < 0 || o.weightDecay < 0)
    throw UsageError("--warmup-steps, --eval-every, --checkpoint-every, --threads and --weight-decay "
                     "must not be negative");
  return o;
}

bool finishOptions(Config &config, const std::string &recipe) {
  if (config.has("help")) {
    std::printf("usage: attn-train %s [--config FILE.yaml|json] [--key=value ...]\n\noptions:\n%s",
                recipe.c_str(), config.help().c_str());
    return true;
  }
  config.rejectUnknown(recipe);
  return false;
}

void applyRuntimeOptions(const CommonOptions &options) {
  if (options.threads > 0)
    torch::set_num_threads(int(options.threads));
  torch::manual_seed(uint64_t(options.seed));
}

AutocastScope::AutocastScope(const CommonOptions &options) {
  if (!options.autocast)
    return;
  active_ = true;
  deviceType_ = options.device.type();
  wasEnabled_ = at::autocast::is_autocast_enabled(deviceType_);
  previousDtype_ = at::autocast::get_autocast_dtype(deviceType_);
  at::autocast::set_autocast_dtype(deviceType_, *options.autocast);
  at::autocast::set_autocast_enabled(deviceType_, true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_)
    return;
  if (at::autocast::decrement_nesting() == 0)
    at::autocast::clear_cache(); // the casts of this step's parameters are stale after it
  at::autocast::set_autocast_enabled(deviceType_, wasEnabled_);
  at::autocast::set_autocast_dtype(deviceType_, previousDtype_);
}

Trainer::Trainer(CommonOptions options, std::vector<std::string> columns,
                 std::vector<std::vector<std::string>> panels,
                 std::shared_ptr<Distributed> distributed)
    : options_(std::move(options)), columns_(std::move(columns)), panels_(std::move(panels)),
      distributed_(std::move(distributed)) {
  if (!distributed_)
    distributed_ = std::make_shared<Distributed>(options_.distributed, options_.device);
}

Trainer::~Trainer() = default;

void Trainer::addModule(const std::string &name, std::shared_ptr<torch::nn::Module> module) {
  state_.modules[name] = std::move(module);
}

void Trainer::addOptimizer(const std::string &name, torch::optim::Optimizer &optimizer,
                           double peakLearningRate) {
  state_.optimizers[name] = &optimizer;
  schedules_.emplace_back(&optimizer, peakLearningRate);
}

std::string Trainer::checkpointPath() const {
  std::string name = distributed_->rank() == 0
                         ? "checkpoint.pt"
                         : "checkpoint.rank" + std::to_string(distributed_->rank()) + ".pt";
  return options_.outDir + "/" + name;
}

void Trainer::maybeResume() {
  if (options_.resume.empty())
    return;
  std::string path = options_.resume == "auto" ? checkpointPath() : options_.resume;
  if (options_.resume == "auto" && !fs::exists(path))
    return; // nothing to resume: a fresh run
  startStep_ = loadTrainState(state_, path);
  if (startStep_ > options_.steps)
    throw UsageError("checkpoint '" + path + "' is at step " + std::to_string(startStep_) +
                     ", beyond --steps=" + std::to_string(options_.steps));
  if (distributed_->isMain())
    std::fprintf(stderr, "resumed from %s at step %lld\n", path.c_str(), (long long)startStep_);
}

Values Trainer::run(const std::function<Values(int64_t)> &step,
                    const std::function<Values(bool final)> &evaluate, int64_t samplesPerStep) {
  bool main = distributed_->isMain();
  fs::create_directories(options_.outDir);

  // Every rank starts from rank 0's initialisation (then resume overwrites it identically).
  for (const auto &[name, module] : state_.modules) {
    std::vector<torch::Tensor> tensors;
    for (const auto &p : module->parameters())
      tensors.push_back(p);
    for (const auto &b : module->buffers())
      tensors.push_back(b);
    distributed_->broadcastFromMain(tensors);
  }
  maybeResume();

  std::unique_ptr<MetricsLog> log;
  if (main)
    log = std::make_unique<MetricsLog>(
        options_.outDir, columns_,
        startStep_ > 0 ? std::optional<int64_t>(startStep_) : std::nullopt);

  ProgressBar progress(options_.recipe, options_.steps, startStep_, options_.progress && main);
  auto wallStart = std::chrono::steady_clock::now();
  Values lastEval;
  auto saveCheckpoint = [&](int64_t completed) { saveTrainState(state_, completed, checkpointPath()); };

  for (int64_t s = startStep_; s < options_.steps; ++s) {
    for (auto &[optimizer, peak] : schedules_) {
      double lr = cosineLearningRate(s, options_.steps, options_.warmupSteps, peak);
      for (auto &group : optimizer->param_groups())
        group.options().set_lr(lr);
    }
    Values values;
    {
      AutocastScope autocast(options_);
      values = step(s);
    }
    int64_t completed = s + 1;
    for (auto &[name, value] : values)
      value = distributed_->mean(value); // report the global batch's figure
    bool last = completed == options_.steps;
    Values row;
    if (completed % options_.logEvery == 0 || last)
      row = values;
    if ((options_.evalEvery > 0 && completed % options_.evalEvery == 0) || last) {
      AutocastScope autocast(options_);
      lastEval = evaluate ? evaluate(last) : Values{};
      for (const auto &[name, value] : lastEval)
        row[name] = value;
    }
    if (!row.empty()) {
      row["lr"] = schedules_.empty() ? 0.0 : schedules_.front().first->param_groups().front().options().get_lr();
      if (log)
        log->write(completed, row);
    }
    std::vector<std::pair<std::string, double>> shown;
    for (const auto &[name, value] : values)
      shown.emplace_back(name, value);
    progress.update(completed, samplesPerStep, shown);
    if ((options_.checkpointEvery > 0 && completed % options_.checkpointEvery == 0) || last)
      saveCheckpoint(completed);
    if (options_.stopAfter > 0 && completed - startStep_ >= options_.stopAfter && !last) {
      saveCheckpoint(completed);
      progress.finish();
      if (main)
        std::fprintf(stderr, "stopped after %lld steps (--stop-after); resume with --resume=auto\n",
                     (long long)options_.stopAfter);
      return lastEval;
    }
  }
  progress.finish();
  finished_ = true;
  if (lastEval.empty() && evaluate) { // resumed from a finished run: report its final figures
    AutocastScope autocast(options_);
    lastEval = evaluate(true);
  }
  if (distributed_->worldSize() > 1)
    verifyReplicasInSync();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wallStart).count();
  if (main) {
    std::ofstream summary(options_.outDir + "/summary.txt");
    summary << "recipe " << options_.recipe << "\nsteps " << options_.steps << "\nwall_seconds "
            << wall << "\n";
    for (const auto &[name, value] : lastEval)
      summary << name << " " << value << "\n";
    std::fprintf(stderr, "%s: %lld steps in %s", options_.recipe.c_str(),
                 (long long)(options_.steps - startStep_), formatDuration(wall).c_str());
    for (const auto &[name, value] : lastEval)
      std::fprintf(stderr, ", %s %.4f", name.c_str(), value);
    std::fprintf(stderr, "\n");
    if (options_.plot && log &&
        plotMetrics(log->csvPath(), options_.outDir + "/metrics.png", options_.recipe, panels_))
      std::fprintf(stderr, "plot: %s/metrics.png\n", options_.outDir.c_str());
  }
  return lastEval;
}

void Trainer::verifyReplicasInSync() {
  // Every registered module (a BYOL target included) must be identical on every rank: compare a
  // per-module checksum with its mean over ranks.
  std::vector<double> sums;
  for (const auto &[name, module] : state_.modules) {
    double sum = 0;
    for (const auto &p : module->parameters())
      sum += p.detach().to(torch::kFloat64).abs().sum().item<double>();
    sums.push_back(sum);
  }
  auto local = torch::tensor(sums, torch::kFloat64);
  auto mean = local.clone();
  distributed_->allReduce({mean}, double(distributed_->worldSize()));
  size_t i = 0;
  for (const auto &[name, module] : state_.modules) {
    double a = local[int64_t(i)].item<double>(), b = mean[int64_t(i)].item<double>();
    if (a != b)
      throw std::runtime_error("data-parallel replicas diverged: module '" + name + "' on rank " +
                               std::to_string(distributed_->rank()) + " differs from the mean over ranks");
    ++i;
  }
  if (distributed_->isMain())
    std::fprintf(stderr, "%s: all %zu modules identical on %lld ranks\n", options_.recipe.c_str(),
                 state_.modules.size(), (long long)distributed_->worldSize());
}

void averageGradients(Distributed &distributed, torch::nn::Module &module) {
  distributed.averageGradients(module.parameters());
}

} // namespace attn::train
