#include "frontend/torch/CpuAttention.h"

#include "frontend/torch/BlockMapCache.h"
#include "frontend/torch/CaptureViews.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <vector>

namespace attn::torchop {
namespace {

std::shared_ptr<const runtime::CpuKernels>
loadKernels(const runtime::VariantSpec &spec, bool backward = false,
            runtime::BackwardUse backwardUse = runtime::BackwardUse::Unknown) {
  try {
    std::shared_ptr<const runtime::CpuKernels> kernels =
        runtime::getCpuKernels(spec, backward ? runtime::BackwardUse::Expected : backwardUse);
    // The backward kernels compile on first use: here, so that a failure is a TORCH_CHECK
    // rather than an exception inside the parallel tiles.
    if (backward)
      kernels->prepareBackward();
    return kernels;
  } catch (const runtime::CompileError &error) {
    TORCH_CHECK(false, error.what());
  }
}

/// Whether a forward's backward will be asked for: its inputs (or floating captures) require
/// grad. A first call without grad (inference) then compiles no backward kernels.
runtime::BackwardUse backwardUseOf(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                                   at::TensorList captures) {
  bool needed = q.requires_grad() || k.requires_grad() || v.requires_grad();
  for (const at::Tensor &capture : captures)
    needed = needed || (at::isFloatingType(capture.scalar_type()) && capture.requires_grad());
  return needed ? runtime::BackwardUse::Expected : runtime::BackwardUse::NotExpected;
}

/// Kernels read float32 with a unit last stride; any other strides are kept as they are.
at::Tensor toKernelLayout(const at::Tensor &tensor) {
  at::Tensor converted = tensor.to(at::kFloat);
  if (converted.size(-1) > 1 && converted.stride(-1) != 1)
    converted = converted.contiguous();
  return converted;
}

template <int Rank> runtime::View<Rank> viewOf(const at::Tensor &tensor) {
  TORCH_INTERNAL_ASSERT(tensor.dim() == Rank && tensor.scalar_type() == at::kFloat);
  runtime::View<Rank> view;
  view.data = tensor.data_ptr<float>();
  for (int dim = 0; dim < Rank; ++dim) {
    view.sizes[dim] = tensor.size(dim);
    view.strides[dim] = tensor.stride(dim);
  }
  // A last dimension of size 1 may carry any stride; the kernels require 1.
  view.strides[Rank - 1] = 1;
  return view;
}

bool hasNoKeysOrQueries(const at::Tensor &q, const at::Tensor &k) {
  return q.size(2) == 0 || k.size(2) == 0;
}

/// The kernels' view of kv_lengths: contiguous int64 on the CPU, kept alive by `storage`.
runtime::KeyLengths keyLengthsOf(const c10::optional<at::Tensor> &kvLengths, int64_t keys,
                                 at::Tensor &storage) {
  if (!kvLengths)
    return {};
  storage = kvLengths->to(at::kLong).contiguous();
  // The kernels clamp to [0, Sk] so that they never read outside k and v; on the CPU the check
  // is free, and a length outside is the caller's bug, not something to round silently.
  if (storage.numel() > 0) {
    const int64_t smallest = storage.min().item<int64_t>(), largest = storage.max().item<int64_t>();
    TORCH_CHECK(smallest >= 0 && largest <= keys,
                "attn::attention: kv_lengths must lie in [0, Sk = ", keys, "], got values in [",
                smallest, ", ", largest, "]");
  }
  return {storage.data_ptr<int64_t>(), storage.size(0)};
}

/// A call's captures as the kernels take them: converted to the IR's element types and
/// contiguous (kept alive by `storage`), checked against the IR's static sizes, with fresh
/// fault flags.
runtime::CaptureArguments bindCaptures(const runtime::CpuKernels &kernels,
                                       at::TensorList captures, std::vector<at::Tensor> &storage) {
  const std::vector<runtime::CaptureView> views =
      captureViews(kernels.captures(), captures, storage);
  try {
    return kernels.bindCaptures(views);
  } catch (const runtime::CallError &error) {
    TORCH_CHECK(false, "attn::attention: ", error.what());
  }
}

/// After a call's tiles: a region that read outside a capture fails the call.
void checkCaptureFaults(const runtime::CpuKernels &kernels,
                        const runtime::CaptureArguments &bound) {
  try {
    kernels.checkCaptureFaults(bound);
  } catch (const runtime::CallError &error) {
    TORCH_CHECK(false, error.what());
  }
}

/// Which rows of the kernel-layout tensors ([B, H, S, D]) each sequence of a call owns. A
/// padded call's sequence b is batch b with all its rows (key lengths, if any, are the
/// kernels' business). A packed call has one batch row: sequence s owns query rows
/// [queryOffsets[s], queryOffsets[s + 1]) and key rows [keyOffsets[s], keyOffsets[s + 1]).
class Sequences {
public:
  static Sequences padded(int64_t batches, int64_t queries, int64_t keys) {
    Sequences sequences;
    sequences.count_ = batches;
    sequences.queries_ = queries;
    sequences.keys_ = keys;
    return sequences;
  }
  static Sequences packed(std::vector<int64_t> queryOffsets, std::vector<int64_t> keyOffsets) {
    Sequences sequences;
    sequences.count_ = static_cast<int64_t>(queryOffsets.size()) - 1;
    sequences.queryOffsets_ = std::move(queryOffsets);
    sequences.keyOffsets_ = std::move(keyOffsets);
    return sequences;
  }

  int64_t count() const { return count_; }
  bool isPacked() const { return !queryOffsets_.empty(); }
  int64_t queries(int64_t s) const {
    return isPacked() ? queryOffsets_[s + 1] - queryOffsets_[s] : queries_;
  }
  int64_t keys(int64_t s) const {
    return isPacked() ? keyOffsets_[s + 1] - keyOffsets_[s] : keys_;
  }
  int64_t rows(int64_t s, bool keyRows) const { return keyRows ? keys(s) : queries(s); }

  /// Sequence s's part of a view whose dimension 2 runs over query (or key) rows. For a
  /// packed call the data moves to the sequence's first row and the batch stride becomes 0,
  /// so that the kernels' batch index s (which score_mod and mask regions see as b) lands on
  /// it, and the view is as long as the sequence.
  template <int Rank>
  runtime::View<Rank> rowsOf(runtime::View<Rank> view, int64_t s, bool keyRows) const {
    if (!isPacked())
      return view;
    const std::vector<int64_t> &offsets = keyRows ? keyOffsets_ : queryOffsets_;
    view.data += offsets[s] * view.strides[2];
    view.sizes[0] = count_;
    view.strides[0] = 0;
    view.sizes[2] = offsets[s + 1] - offsets[s];
    return view;
  }

private:
  int64_t count_ = 0, queries_ = 0, keys_ = 0;
  std::vector<int64_t> queryOffsets_, keyOffsets_;
};

/// forEachRowTile over the sequences' query rows or key rows.
template <typename RunTile>
void forEachSequenceTile(const Sequences &sequences, bool keyRows, int64_t heads, int64_t tile,
                         const RunTile &runTile) {
  forEachRowTile(
      sequences.count(), heads, tile,
      [&](int64_t s) { return sequences.rows(s, keyRows); }, runTile);
}

/// With spec.captureGradients: per floating capture, one zeroed buffer per thread that runs
/// dQ tiles (the kernels add without atomics), bound once per thread and summed after the
/// tiles (threads x the captures' sizes of extra memory).
class CaptureGradientBuffers {
public:
  CaptureGradientBuffers(const runtime::CpuKernels &kernels, const runtime::VariantSpec &spec,
                         at::TensorList captures, const at::TensorOptions &floatOptions)
      : buffers_(captures.size()), threads_(spec.captureGradients ? at::get_num_threads() : 0) {
    if (!spec.captureGradients)
      return;
    for (size_t i = 0; i < captures.size(); ++i)
      if (at::isFloatingType(captures[i].scalar_type())) {
        std::vector<int64_t> sizes{threads_};
        sizes.insert(sizes.end(), captures[i].sizes().begin(), captures[i].sizes().end());
        buffers_[i] = at::zeros(sizes, floatOptions);
      }
    for (int64_t thread = 0; thread < threads_; ++thread) {
      std::vector<runtime::CaptureView> views(captures.size());
      for (size_t i = 0; i < captures.size(); ++i) {
        views[i].sizes = captures[i].sizes().vec();
        if (buffers_[i].defined())
          views[i].data = buffers_[i][thread].data_ptr<float>();
      }
      bound_.push_back(kernels.bindCaptureGradients(views));
    }
  }

  /// The calling thread's buffers, or null without capture gradients.
  const runtime::CaptureArguments *forThisThread() const {
    if (threads_ == 0)
      return nullptr;
    const int64_t thread = at::get_thread_num();
    TORCH_CHECK(thread >= 0 && thread < threads_, "attn::attention: dQ tile on thread ", thread,
                " of ", threads_);
    return &bound_[thread];
  }

  /// Per capture, its gradient (undefined for integer captures); empty without capture
  /// gradients.
  std::vector<at::Tensor> sums() const {
    if (threads_ == 0)
      return {};
    std::vector<at::Tensor> summed(buffers_.size());
    for (size_t i = 0; i < buffers_.size(); ++i)
      if (buffers_[i].defined())
        summed[i] = buffers_[i].sum(0);
    return summed;
  }

private:
  std::vector<at::Tensor> buffers_;
  std::vector<runtime::CaptureArguments> bound_;
  int64_t threads_;
};

/// The forward's tiles over every sequence. Sequences without keys are skipped: the caller
/// has zero-filled their rows (a row that attends to nothing is 0).
void runForwardTiles(const runtime::CpuKernels &kernels, const Sequences &sequences,
                     const runtime::View4 &q, const runtime::View4 &k, const runtime::View4 &v,
                     const runtime::View4 &out, const runtime::View3 &lse,
                     const runtime::KeyLengths &lengths, const runtime::CaptureArguments &bound,
                     const runtime::BlockMap *map = nullptr) {
  forEachSequenceTile(sequences, /*keyRows=*/false, q.sizes[1], kernels.queryTile(),
                      [&](int64_t s, int64_t head, int64_t queryStart) {
                        if (sequences.keys(s) == 0)
                          return;
                        kernels.forwardTile(sequences.rowsOf(q, s, false),
                                            sequences.rowsOf(k, s, true),
                                            sequences.rowsOf(v, s, true),
                                            sequences.rowsOf(out, s, false),
                                            sequences.rowsOf(lse, s, false), s, head,
                                            queryStart, lengths, &bound, map);
                      });
}

/// The tensors the backward's tiles read and write, as kernel views.
struct BackwardViews {
  runtime::View4 q, k, v, gradOut, gradQ, gradK, gradV;
  runtime::View3 lse, delta;
};

/// The backward's dQ tiles, then its dK/dV tiles, over every sequence. Sequences without
/// keys or without queries are skipped: the caller has zero-filled their gradients.
void runBackwardTiles(const runtime::CpuKernels &kernels, const Sequences &sequences,
                      const BackwardViews &views, const runtime::KeyLengths &lengths,
                      const runtime::CaptureArguments &bound,
                      const CaptureGradientBuffers &captureGradients,
                      const runtime::BlockMap *map = nullptr) {
  forEachSequenceTile(
      sequences, /*keyRows=*/false, views.q.sizes[1], kernels.queryTile(),
      [&](int64_t s, int64_t head, int64_t queryStart) {
        if (sequences.keys(s) == 0)
          return;
        kernels.backwardQueryTile(
            sequences.rowsOf(views.q, s, false), sequences.rowsOf(views.k, s, true),
            sequences.rowsOf(views.v, s, true), sequences.rowsOf(views.gradOut, s, false),
            sequences.rowsOf(views.lse, s, false), sequences.rowsOf(views.delta, s, false),
            sequences.rowsOf(views.gradQ, s, false), s, head, queryStart, lengths, &bound,
            captureGradients.forThisThread(), map);
      });
  forEachSequenceTile(
      sequences, /*keyRows=*/true, views.k.sizes[1], kernels.keyTile(),
      [&](int64_t s, int64_t kvHead, int64_t keyStart) {
        if (sequences.queries(s) == 0)
          return;
        kernels.backwardKeyTile(
            sequences.rowsOf(views.q, s, false), sequences.rowsOf(views.k, s, true),
            sequences.rowsOf(views.v, s, true), sequences.rowsOf(views.gradOut, s, false),
            sequences.rowsOf(views.lse, s, false), sequences.rowsOf(views.delta, s, false),
            sequences.rowsOf(views.gradK, s, true), sequences.rowsOf(views.gradV, s, true), s,
            kvHead, keyStart, lengths, &bound, map);
      });
}

/// A packed tensor [T, H, D] as the kernels see it: [1, H, T, D] (no copy when its last
/// stride is 1).
at::Tensor packedToKernelLayout(const at::Tensor &packed) {
  return toKernelLayout(packed).unsqueeze(0).transpose(1, 2);
}

/// Sequence offsets from cu_seqlens ([count + 1] integers, checked by the op).
std::vector<int64_t> offsetsOf(const at::Tensor &cumulative) {
  const at::Tensor offsets = cumulative.to(at::kLong).contiguous();
  return std::vector<int64_t>(offsets.data_ptr<int64_t>(),
                              offsets.data_ptr<int64_t>() + offsets.numel());
}

} // namespace

AttentionForward cpuAttentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                     const at::Tensor &k, const at::Tensor &v,
                                     const c10::optional<at::Tensor> &kvLengths,
                                     at::TensorList captures) {
  // Compiled even when there is nothing to compute, so that a bad variant always fails.
  std::shared_ptr<const runtime::CpuKernels> kernels =
      loadKernels(spec, /*backward=*/false, backwardUseOf(q, k, v, captures));
  at::Tensor lengthsStorage;
  const runtime::KeyLengths lengths = keyLengthsOf(kvLengths, k.size(2), lengthsStorage);
  std::vector<at::Tensor> captureStorage;
  runtime::CaptureArguments bound = bindCaptures(*kernels, captures, captureStorage);
  const int64_t batches = q.size(0), heads = q.size(1), queries = q.size(2);
  const at::TensorOptions floatOptions = q.options().dtype(at::kFloat);
  if (hasNoKeysOrQueries(q, k)) {
    // With no keys every query row is fully masked, and a fully masked row attends to nothing.
    return {at::zeros({batches, heads, queries, v.size(3)}, floatOptions),
            at::zeros({batches, heads, queries}, floatOptions)};
  }

  const at::Tensor qf = toKernelLayout(q), kf = toKernelLayout(k), vf = toKernelLayout(v);
  AttentionForward result{at::empty({batches, heads, queries, v.size(3)}, floatOptions),
                          at::empty({batches, heads, queries}, floatOptions)};
  // A mask region's block classifications: filled here, read by the backward (and by later
  // calls with the same lengths and mask captures).
  const CallBlockMap map =
      blockMapFor(kernels, batches, heads, queries, k.size(2), lengthsStorage, captureStorage);
  runForwardTiles(*kernels, Sequences::padded(batches, queries, k.size(2)), viewOf<4>(qf),
                  viewOf<4>(kf), viewOf<4>(vf), viewOf<4>(result.out), viewOf<3>(result.lse),
                  lengths, bound, map.get());
  checkCaptureFaults(*kernels, bound);
  return result;
}

AttentionGradients cpuAttentionBackward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                        const at::Tensor &k, const at::Tensor &v,
                                        const at::Tensor &out, const at::Tensor &lse,
                                        const at::Tensor &gradOut,
                                        const c10::optional<at::Tensor> &kvLengths,
                                        at::TensorList captures) {
  std::shared_ptr<const runtime::CpuKernels> kernels = loadKernels(spec, /*backward=*/true);
  at::Tensor lengthsStorage;
  const runtime::KeyLengths lengths = keyLengthsOf(kvLengths, k.size(2), lengthsStorage);
  std::vector<at::Tensor> captureStorage;
  runtime::CaptureArguments bound = bindCaptures(*kernels, captures, captureStorage);
  const at::TensorOptions floatOptions = q.options().dtype(at::kFloat);
  const CaptureGradientBuffers captureGradients(*kernels, spec, captures, floatOptions);
  if (hasNoKeysOrQueries(q, k)) {
    return {at::zeros(q.sizes(), floatOptions), at::zeros(k.sizes(), floatOptions),
            at::zeros(v.sizes(), floatOptions), captureGradients.sums()};
  }

  const at::Tensor qf = toKernelLayout(q), kf = toKernelLayout(k), vf = toKernelLayout(v);
  const at::Tensor gradOutF = toKernelLayout(gradOut);
  // Only row-wise normalizers read delta = rowsum(dO * O); elementwise kernels never load it,
  // so lse's view stands in rather than paying a pass over dO and O.
  const at::Tensor delta = kernels->rowWise() ? (gradOutF * out.to(at::kFloat)).sum(-1) : lse;
  // With key lengths the dK/dV kernels leave the rows past each batch's length unwritten.
  auto keyGradient = [&](at::IntArrayRef sizes) {
    return kvLengths ? at::zeros(sizes, floatOptions) : at::empty(sizes, floatOptions);
  };
  AttentionGradients grads{at::empty(q.sizes(), floatOptions), keyGradient(k.sizes()),
                           keyGradient(v.sizes())};
  const BackwardViews views{viewOf<4>(qf),      viewOf<4>(kf),       viewOf<4>(vf),
                            viewOf<4>(gradOutF), viewOf<4>(grads.q), viewOf<4>(grads.k),
                            viewOf<4>(grads.v), viewOf<3>(lse),      viewOf<3>(delta)};
  // The forward's block map (the same inputs find it in the cache).
  const CallBlockMap map = blockMapFor(kernels, q.size(0), q.size(1), q.size(2), k.size(2),
                                       lengthsStorage, captureStorage);
  runBackwardTiles(*kernels, Sequences::padded(q.size(0), q.size(2), k.size(2)), views, lengths,
                   bound, captureGradients, map.get());
  checkCaptureFaults(*kernels, bound);
  grads.captures = captureGradients.sums();
  return grads;
}

AttentionForward cpuPackedAttentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                           const at::Tensor &k, const at::Tensor &v,
                                           const at::Tensor &cuSeqlensQ,
                                           const at::Tensor &cuSeqlensK,
                                           at::TensorList captures) {
  std::shared_ptr<const runtime::CpuKernels> kernels =
      loadKernels(spec, /*backward=*/false, backwardUseOf(q, k, v, captures));
  std::vector<at::Tensor> captureStorage;
  runtime::CaptureArguments bound = bindCaptures(*kernels, captures, captureStorage);
  const Sequences sequences = Sequences::packed(offsetsOf(cuSeqlensQ), offsetsOf(cuSeqlensK));
  const at::TensorOptions floatOptions = q.options().dtype(at::kFloat);
  // Zero-filled: the rows of a sequence without keys attend to nothing.
  AttentionForward result{at::zeros({q.size(0), q.size(1), v.size(2)}, floatOptions),
                          at::zeros({q.size(1), q.size(0)}, floatOptions)};
  const at::Tensor qf = packedToKernelLayout(q), kf = packedToKernelLayout(k),
                   vf = packedToKernelLayout(v);
  runForwardTiles(*kernels, sequences, viewOf<4>(qf), viewOf<4>(kf), viewOf<4>(vf),
                  viewOf<4>(result.out.unsqueeze(0).transpose(1, 2)),
                  viewOf<3>(result.lse.unsqueeze(0)), {}, bound);
  checkCaptureFaults(*kernels, bound);
  return result;
}

AttentionGradients cpuPackedAttentionBackward(const runtime::VariantSpec &spec,
                                              const at::Tensor &q, const at::Tensor &k,
                                              const at::Tensor &v, const at::Tensor &out,
                                              const at::Tensor &lse, const at::Tensor &gradOut,
                                              const at::Tensor &cuSeqlensQ,
                                              const at::Tensor &cuSeqlensK,
                                              at::TensorList captures) {
  std::shared_ptr<const runtime::CpuKernels> kernels = loadKernels(spec, /*backward=*/true);
  std::vector<at::Tensor> captureStorage;
  runtime::CaptureArguments bound = bindCaptures(*kernels, captures, captureStorage);
  const Sequences sequences = Sequences::packed(offsetsOf(cuSeqlensQ), offsetsOf(cuSeqlensK));
  const at::TensorOptions floatOptions = q.options().dtype(at::kFloat);
  const CaptureGradientBuffers captureGradients(*kernels, spec, captures, floatOptions);
  const at::Tensor qf = packedToKernelLayout(q), kf = packedToKernelLayout(k),
                   vf = packedToKernelLayout(v), gradOutF = packedToKernelLayout(gradOut);
  const at::Tensor lseF = lse.to(at::kFloat).contiguous().unsqueeze(0);
  // delta [1, Hq, Tq], as lse; only row-wise normalizers read it.
  const at::Tensor delta = kernels->rowWise()
                               ? (gradOutF * packedToKernelLayout(out)).sum(-1).contiguous()
                               : lseF;
  // Zero-filled: sequences without keys or queries have zero gradients, and their tiles do
  // not run.
  AttentionGradients grads{at::zeros(q.sizes(), floatOptions), at::zeros(k.sizes(), floatOptions),
                           at::zeros(v.sizes(), floatOptions)};
  const BackwardViews views{viewOf<4>(qf),
                            viewOf<4>(kf),
                            viewOf<4>(vf),
                            viewOf<4>(gradOutF),
                            viewOf<4>(grads.q.unsqueeze(0).transpose(1, 2)),
                            viewOf<4>(grads.k.unsqueeze(0).transpose(1, 2)),
                            viewOf<4>(grads.v.unsqueeze(0).transpose(1, 2)),
                            viewOf<3>(lseF),
                            viewOf<3>(delta)};
  runBackwardTiles(*kernels, sequences, views, {}, bound, captureGradients);
  checkCaptureFaults(*kernels, bound);
  grads.captures = captureGradients.sums();
  return grads;
}

} // namespace attn::torchop
