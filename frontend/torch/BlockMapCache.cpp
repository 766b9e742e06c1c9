#include "frontend/torch/BlockMapCache.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdlib>
#include <list>
#include <mutex>
#include <string>

namespace attn::torchop {
namespace {

/// One map and what decided it.
struct Entry {
  std::shared_ptr<const runtime::CpuKernels> kernels;
  int64_t sizes[4] = {};
  int64_t queries = 0, keys = 0;
  at::Tensor lengths;               ///< a copy, or undefined
  std::vector<at::Tensor> captures; ///< copies of the captures the mask region reads
  at::Tensor map;
};

/// Same dtype, shape and values (both undefined counts as equal).
bool sameValues(const at::Tensor &a, const at::Tensor &b) {
  if (a.defined() != b.defined())
    return false;
  return !a.defined() ||
         (a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && at::equal(a, b));
}

class Cache {
public:
  /// Few distinct masks run at once (a model's layers share theirs); a training step's
  /// forward and backward of one call are adjacent.
  static constexpr size_t kEntries = 16;

  at::Tensor find(const Entry &wanted) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->kernels != wanted.kernels || it->queries != wanted.queries ||
          it->keys != wanted.keys || !std::equal(it->sizes, it->sizes + 4, wanted.sizes) ||
          !sameValues(it->lengths, wanted.lengths) ||
          it->captures.size() != wanted.captures.size())
        continue;
      bool same = true;
      for (size_t i = 0; same && i < it->captures.size(); ++i)
        same = sameValues(it->captures[i], wanted.captures[i]);
      if (!same)
        continue;
      entries_.splice(entries_.begin(), entries_, it);
      return entries_.front().map;
    }
    return {};
  }

  void remember(Entry entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.push_front(std::move(entry));
    if (entries_.size() > kEntries)
      entries_.pop_back();
  }

  std::vector<at::Tensor> maps(bool clear) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<at::Tensor> maps;
    for (const Entry &entry : entries_)
      maps.push_back(entry.map);
    if (clear)
      entries_.clear();
    return maps;
  }

private:
  std::mutex mutex_;
  std::list<Entry> entries_; ///< most recently used first
};

Cache &cache() {
  static Cache &instance = *new Cache;
  return instance;
}

} // namespace

CallBlockMap blockMapFor(const std::shared_ptr<const runtime::CpuKernels> &kernels,
                         int64_t batches, int64_t heads, int64_t queries, int64_t keys,
                         const at::Tensor &lengths, const std::vector<at::Tensor> &captures) {
  const runtime::BlockMapLayout &layout = kernels->blockMapLayout();
  // ATTN_BLOCK_MAP=0: no map, every kernel classifies every block itself (for measuring what
  // the map saves).
  static const bool disabled = [] {
    const char *text = std::getenv("ATTN_BLOCK_MAP");
    return text && std::string(text) == "0";
  }();
  if (!layout.present || disabled)
    return {};
  const int64_t queryTile = kernels->queryTile(), keyTile = kernels->keyTile();
  Entry wanted;
  wanted.kernels = kernels;
  wanted.sizes[0] = layout.perBatch ? batches : 1;
  wanted.sizes[1] = layout.perHead ? heads : 1;
  wanted.sizes[2] = (queries + queryTile - 1) / queryTile;
  wanted.sizes[3] = (keys + keyTile - 1) / keyTile;
  // The last tile's and block's extents depend on the exact lengths, not only the counts.
  wanted.queries = queries;
  wanted.keys = keys;
  wanted.lengths = lengths;
  for (size_t index : layout.maskCaptures)
    wanted.captures.push_back(captures.at(index));
  CallBlockMap result;
  result.storage = cache().find(wanted);
  if (!result.storage.defined()) {
    result.storage = at::full({wanted.sizes[0], wanted.sizes[1], wanted.sizes[2], wanted.sizes[3]},
                              3, at::TensorOptions().dtype(at::kChar));
    // The cache owns copies: the call's tensors may change in place after it returns.
    if (wanted.lengths.defined())
      wanted.lengths = wanted.lengths.clone();
    for (at::Tensor &capture : wanted.captures)
      capture = capture.clone();
    wanted.map = result.storage;
    cache().remember(std::move(wanted));
  }
  result.map.data = result.storage.data_ptr<int8_t>();
  for (int d = 0; d < 4; ++d)
    result.map.sizes[d] = result.storage.size(d);
  return result;
}

TORCH_LIBRARY_FRAGMENT(attn, m) {
  // The cached block maps, most recently used first (they share storage with the cache: a
  // test may overwrite entries to see which kernels read them); `clear` empties the cache.
  m.def("_block_maps(bool clear=False) -> Tensor[]",
        [](bool clear) { return cache().maps(clear); });
}

} // namespace attn::torchop
