// Data-parallel training over torch's c10d: a TCPStore rendezvous, ProcessGroupGloo on CPU
// (ProcessGroupNCCL when this LibTorch has it and the device is CUDA). With world size 1 every
// call is a no-op, so recipes are written once.
#ifndef MODELS_TRAIN_DISTRIBUTED_H
#define MODELS_TRAIN_DISTRIBUTED_H

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace c10d {
class Backend;
class Store;
} // namespace c10d

namespace attn::train {

struct DistributedOptions {
  int64_t worldSize = 1, rank = 0;
  std::string masterAddr = "127.0.0.1";
  int64_t masterPort = 29500;
  /// How long rendezvous and collectives may wait for the other ranks.
  int64_t timeoutSeconds = 120;
};

class Distributed {
public:
  /// Joins the group (blocks until all ranks arrive); world size 1 joins nothing.
  Distributed(const DistributedOptions &options, torch::Device device);
  ~Distributed();

  int64_t rank() const { return rank_; }
  int64_t worldSize() const { return worldSize_; }
  bool isMain() const { return rank_ == 0; }
  const char *backendName() const;

  /// Makes every rank's tensors equal to rank 0's (parameters and buffers at start).
  void broadcastFromMain(const std::vector<torch::Tensor> &tensors);
  /// Sums the tensors over ranks in place, then divides by `divisor` (world size for a mean).
  void allReduce(const std::vector<torch::Tensor> &tensors, double divisor);
  /// Averages the gradients of `parameters` over ranks (one flat all-reduce).
  void averageGradients(const std::vector<torch::Tensor> &parameters);
  /// Sums the gradients (losses computed on the gathered global batch: each rank already holds
  /// the global loss's gradient with respect to its own samples).
  void sumGradients(const std::vector<torch::Tensor> &parameters);
  /// Concatenates `local` [n, ...] of every rank along dim 0 in rank order; the local slice keeps
  /// its autograd history, the others are constants.
  torch::Tensor gatherWithLocalGradient(const torch::Tensor &local);
  /// Sums `local` over ranks, differentiably: the backward pass sums the incoming gradients over
  /// ranks too, so a statistic of the global batch (synchronised BatchNorm's mean and variance)
  /// sends every rank's share of the gradient back to each rank's own samples. Every rank must
  /// call it (and run backward through it) in the same order. World size 1: returns `local`.
  torch::Tensor allReduceSumWithGradient(const torch::Tensor &local);
  double mean(double value);
  void barrier();

private:
  void reduceGradients(const std::vector<torch::Tensor> &parameters, double divisor);

  int64_t rank_ = 0, worldSize_ = 1;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> group_; ///< Gloo or NCCL, used directly (no ProcessGroup wrapper)
  bool nccl_ = false;
};

/// Fills world size, rank, master address and port from WORLD_SIZE, RANK, MASTER_ADDR and
/// MASTER_PORT where the options were left at their defaults.
DistributedOptions distributedOptionsFromEnvironment(DistributedOptions options);

} // namespace attn::train

#endif // MODELS_TRAIN_DISTRIBUTED_H
