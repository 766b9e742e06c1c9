// The block maps of mask-region variants (runtime::BlockMap): one per distinct set of inputs
// that decide the blocks' classifications, kept across calls, so that the forward classifies
// each block once and the backward (and every other layer whose mask reads the same lengths
// and tensors) reads the forward's classification instead of evaluating the region again.
#ifndef FRONTEND_TORCH_BLOCKMAPCACHE_H
#define FRONTEND_TORCH_BLOCKMAPCACHE_H

#include "runtime/CpuKernels.h"

#include <ATen/core/Tensor.h>

#include <vector>

namespace attn::torchop {

/// A call's block map: `map` points into `storage` (int8, contiguous), or is null when the
/// variant has no mask region.
struct CallBlockMap {
  at::Tensor storage;
  runtime::BlockMap map;
  const runtime::BlockMap *get() const { return map.data ? &map : nullptr; }
};

/// The block map for a call of `kernels` over `batches` x `heads` sequences of `queries`
/// query and `keys` key rows, with the kernels' view of kv_lengths (`lengths`, undefined
/// without) and the call's captures as the kernels read them (`captures`, converted and
/// contiguous). Returns the cached map whose inputs equal these (the entries the forward has
/// classified), else a new one filled with 3 (unclassified) and remembers it. The inputs are
/// compared by value (lengths and the captures the mask region reads are copied into the
/// cache), so a tensor changed in place never reuses a stale map. Thread-safe.
/// ATTN_BLOCK_MAP=0 returns no map: each kernel then classifies every block it visits.
CallBlockMap blockMapFor(const std::shared_ptr<const runtime::CpuKernels> &kernels,
                         int64_t batches, int64_t heads, int64_t queries, int64_t keys,
                         const at::Tensor &lengths, const std::vector<at::Tensor> &captures);

} // namespace attn::torchop

#endif // FRONTEND_TORCH_BLOCKMAPCACHE_H
