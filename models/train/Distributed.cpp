#include "models/train/Distributed.h"

#include "models/train/Config.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef ATTN_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>

namespace attn::train {

DistributedOptions distributedOptionsFromEnvironment(DistributedOptions options) {
  auto fromEnv = [](const char *name) -> const char * {
    const char *value = std::getenv(name);
    return value && *value ? value : nullptr;
  };
  DistributedOptions defaults;
  if (options.worldSize == defaults.worldSize)
    if (const char *v = fromEnv("WORLD_SIZE"))
      options.worldSize = std::atoll(v);
  if (options.rank == defaults.rank)
    if (const char *v = fromEnv("RANK"))
      options.rank = std::atoll(v);
  if (options.masterAddr == defaults.masterAddr)
    if (const char *v = fromEnv("MASTER_ADDR"))
      options.masterAddr = v;
  if (options.masterPort == defaults.masterPort)
    if (const char *v = fromEnv("MASTER_PORT"))
      options.masterPort = std::atoll(v);
  return options;
}

Distributed::Distributed(const DistributedOptions &options, torch::Device device)
    : rank_(options.rank), worldSize_(options.worldSize) {
  if (worldSize_ < 1 || rank_ < 0 || rank_ >= worldSize_)
    throw UsageError("--rank must be in [0, --world-size), got rank " + std::to_string(rank_) +
                     " of " + std::to_string(worldSize_));
  if (options.masterPort <= 0 || options.masterPort > 65535)
    throw UsageError("--master-port must be a TCP port, got " + std::to_string(options.masterPort));
  if (worldSize_ == 1)
    return;

  auto timeout = std::chrono::milliseconds(options.timeoutSeconds * 1000);
  c10d::TCPStoreOptions storeOptions;
  storeOptions.port = uint16_t(options.masterPort);
  storeOptions.isServer = rank_ == 0;
  storeOptions.numWorkers = size_t(worldSize_);
  storeOptions.waitWorkers = true;
  storeOptions.timeout = timeout;
  auto tcpStore = c10::make_intrusive<c10d::TCPStore>(options.masterAddr, storeOptions);
  store_ = c10::make_intrusive<c10d::PrefixStore>("attn-train", tcpStore);

#ifdef ATTN_WITH_NCCL
  if (device.is_cuda()) {
    auto ncclOptions = c10d::ProcessGroupNCCL::Options::create();
    ncclOptions->timeout = timeout;
    group_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, int(rank_), int(worldSize_),
                                                         ncclOptions);
    nccl_ = true;
    return;
  }
#endif
  (void)device;
  auto glooOptions = c10d::ProcessGroupGloo::Options::create(timeout);
  glooOptions->devices.push_back(
      c10d::ProcessGroupGloo::createDeviceForHostname(options.masterAddr));
  group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, int(rank_), int(worldSize_),
                                                       glooOptions);
}

Distributed::~Distributed() = default;

const char *Distributed::backendName() const {
  if (worldSize_ == 1)
    return "none";
  return nccl_ ? "nccl" : "gloo";
}

// Gloo here works on CPU tensors; NCCL on the device's own.
static torch::Tensor forCollective(const torch::Tensor &t, bool nccl) {
  return nccl || t.device().is_cpu() ? t : t.to(torch::kCPU);
}

void Distributed::broadcastFromMain(const std::vector<torch::Tensor> &tensors) {
  if (worldSize_ == 1)
    return;
  torch::NoGradGuard noGrad;
  for (const auto &tensor : tensors) {
    std::vector<torch::Tensor> buffer{forCollective(tensor.contiguous(), nccl_)};
    group_->broadcast(buffer)->wait();
    tensor.copy_(buffer[0]);
  }
}

void Distributed::allReduce(const std::vector<torch::Tensor> &tensors, double divisor) {
  if (worldSize_ == 1) {
    if (divisor != 1.0)
      for (const auto &tensor : tensors)
        tensor.div_(divisor);
    return;
  }
  torch::NoGradGuard noGrad;
  for (const auto &tensor : tensors) {
    std::vector<torch::Tensor> buffer{forCollective(tensor.contiguous(), nccl_)};
    group_->allreduce(buffer)->wait();
    tensor.copy_(buffer[0].div_(divisor));
  }
}

void Distributed::reduceGradients(const std::vector<torch::Tensor> &parameters, double divisor) {
  if (worldSize_ == 1)
    return;
  torch::NoGradGuard noGrad;
  // Parameters without a gradient (unused by this loss) are skipped on every rank alike, as
  // a single process would leave them untouched.
  std::vector<torch::Tensor> withGrad;
  for (const auto &p : parameters)
    if (p.grad().defined())
      withGrad.push_back(p);
  if (withGrad.empty())
    return;
  std::vector<torch::Tensor> grads;
  for (const auto &p : withGrad)
    grads.push_back(p.grad().reshape(-1));
  // One collective for the whole model: fewer round trips, same sums.
  auto flat = torch::cat(grads);
  allReduce({flat}, divisor);
  int64_t offset = 0;
  for (const auto &p : withGrad) {
    int64_t n = p.numel();
    p.mutable_grad().copy_(flat.slice(0, offset, offset + n).view_as(p));
    offset += n;
  }
}

void Distributed::averageGradients(const std::vector<torch::Tensor> &parameters) {
  reduceGradients(parameters, double(worldSize_));
}

void Distributed::sumGradients(const std::vector<torch::Tensor> &parameters) {
  reduceGradients(parameters, 1.0);
}

torch::Tensor Distributed::gatherWithLocalGradient(const torch::Tensor &local) {
  if (worldSize_ == 1)
    return local;
  std::vector<torch::Tensor> parts;
  {
    torch::NoGradGuard noGrad;
    std::vector<torch::Tensor> input{forCollective(local.detach().contiguous(), nccl_)};
    std::vector<std::vector<torch::Tensor>> output(1);
    for (int64_t r = 0; r < worldSize_; ++r)
      output[0].push_back(torch::empty_like(input[0]));
    group_->allgather(output, input)->wait();
    for (auto &part : output[0])
      parts.push_back(part.to(local.device()));
  }
  parts[rank_] = local;
  return torch::cat(parts, 0);
}

namespace {

/// y = Σ_ranks x; ∂L/∂x = Σ_ranks ∂L/∂y (each rank's loss reaches y through its own samples).
struct AllReduceSum : torch::autograd::Function<AllReduceSum> {
  static torch::Tensor forward(torch::autograd::AutogradContext *ctx, const torch::Tensor &local,
                               int64_t distributed) {
    ctx->saved_data["distributed"] = distributed;
    auto sum = local.detach().clone(torch::MemoryFormat::Contiguous);
    reinterpret_cast<Distributed *>(distributed)->allReduce({sum}, 1.0);
    return sum;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
                                               torch::autograd::tensor_list grads) {
    auto *distributed = reinterpret_cast<Distributed *>(ctx->saved_data["distributed"].toInt());
    auto grad = grads[0].clone(torch::MemoryFormat::Contiguous);
    distributed->allReduce({grad}, 1.0);
    return {grad, torch::Tensor()};
  }
};

} // namespace

torch::Tensor Distributed::allReduceSumWithGradient(const torch::Tensor &local) {
  if (worldSize_ == 1)
    return local;
  return AllReduceSum::apply(local, reinterpret_cast<int64_t>(this));
}

double Distributed::mean(double value) {
  if (worldSize_ == 1)
    return value;
  auto t = torch::tensor({value}, torch::kFloat64);
  allReduce({t}, double(worldSize_));
  return t.item<double>();
}

void Distributed::barrier() {
  if (worldSize_ == 1)
    return;
  group_->barrier()->wait();
}

} // namespace attn::train
