// The tensor-level CPU forward and backward of attn::attention: converts tensors to the float32
// views the JIT-compiled kernels take and runs the kernels' independent tiles in parallel.
#ifndef FRONTEND_TORCH_CPUATTENTION_H
#define FRONTEND_TORCH_CPUATTENTION_H

#include "runtime/CpuKernels.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <vector>

namespace attn::torchop {

/// Runs `runTile(sequence, head, start)` for every tile of `tile` rows of every (sequence,
/// head) of `sequences` sequences, sequence s having `rowsOf(s)` rows; tiles are independent,
/// so they run in parallel on torch's intra-op threads. Sequences without rows have no tiles.
template <typename RowsOf, typename RunTile>
void forEachRowTile(int64_t sequences, int64_t heads, int64_t tile, const RowsOf &rowsOf,
                    const RunTile &runTile) {
  // firstTile[s]: the index of sequence s's first tile, counting heads x tiles per sequence.
  std::vector<int64_t> firstTile(sequences + 1, 0);
  for (int64_t s = 0; s < sequences; ++s)
    firstTile[s + 1] = firstTile[s] + heads * ((rowsOf(s) + tile - 1) / tile);
  at::parallel_for(0, firstTile.back(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t s =
          std::upper_bound(firstTile.begin(), firstTile.end(), index) - firstTile.begin() - 1;
      const int64_t tilesPerHead = (firstTile[s + 1] - firstTile[s]) / heads;
      const int64_t local = index - firstTile[s];
      runTile(s, local / tilesPerHead, (local % tilesPerHead) * tile);
    }
  });
}

/// Runs `runTile(batch, head, start)` for every tile of a [batches, heads, length] grid cut
/// into tiles of `tile` rows along the length.
template <typename RunTile>
void forEachTile(int64_t batches, int64_t heads, int64_t length, int64_t tile,
                 const RunTile &runTile) {
  forEachRowTile(batches, heads, tile, [length](int64_t) { return length; }, runTile);
}

struct AttentionForward {
  at::Tensor out; ///< [B, Hq, Sq, Dv] float32
  at::Tensor lse; ///< [B, Hq, Sq] float32, meaningful only for row-wise normalizers
};

struct AttentionGradients {
  at::Tensor q, k, v; ///< float32, shaped like the inputs
  /// With spec.captureGradients: per capture, its gradient (float32, the capture's shape) for
  /// floating captures and an undefined tensor for integer ones; empty otherwise.
  std::vector<at::Tensor> captures;
};

/// q, k, v of any floating dtype; the results are float32. Throws c10::Error when the variant
/// cannot be compiled. `kvLengths` ([B] integers, given exactly when spec.keyLengths): batch b
/// attends to its first kvLengths[b] keys (clamped to [0, Sk]). `captures` (one per
/// spec.captures) are converted to the element types the variant's IR declares and made
/// contiguous; a region that read outside one makes the call an error (c10::Error).
AttentionForward cpuAttentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                     const at::Tensor &k, const at::Tensor &v,
                                     const c10::optional<at::Tensor> &kvLengths = c10::nullopt,
                                     at::TensorList captures = {});

/// `out` and `lse` are cpuAttentionForward's results for the same q, k, v, lengths and spec.
/// Keys at and past a batch's length get zero gradients. With spec.captureGradients the
/// floating captures' gradients come too (each dQ thread accumulates into buffers of its own,
/// summed at the end: threads x the captures' sizes of extra memory).
AttentionGradients cpuAttentionBackward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                        const at::Tensor &k, const at::Tensor &v,
                                        const at::Tensor &out, const at::Tensor &lse,
                                        const at::Tensor &gradOut,
                                        const c10::optional<at::Tensor> &kvLengths = c10::nullopt,
                                        at::TensorList captures = {});

/// A packed (varlen) call: q [Tq, Hq, D], k [Tk, Hkv, D], v [Tk, Hkv, Dv] hold the sequences
/// one after another; sequence s owns query rows [cuSeqlensQ[s], cuSeqlensQ[s + 1]) and key
/// rows [cuSeqlensK[s], cuSeqlensK[s + 1]) (integer tensors [count + 1], checked by the op:
/// from 0, non-decreasing, up to Tq and Tk). Each sequence attends within itself only, as an
/// unpadded call of its own would, and its score_mod and mask regions see b = s and row
/// indices counted from the sequence's start. out [Tq, Hq, Dv] and lse [Hq, Tq], float32;
/// a sequence without keys gets zero rows.
AttentionForward cpuPackedAttentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                           const at::Tensor &k, const at::Tensor &v,
                                           const at::Tensor &cuSeqlensQ,
                                           const at::Tensor &cuSeqlensK,
                                           at::TensorList captures = {});

/// The backward of cpuPackedAttentionForward, with its `out` and `lse`; gradients shaped like
/// the packed inputs (float32), and the floating captures' with spec.captureGradients.
AttentionGradients cpuPackedAttentionBackward(const runtime::VariantSpec &spec,
                                              const at::Tensor &q, const at::Tensor &k,
                                              const at::Tensor &v, const at::Tensor &out,
                                              const at::Tensor &lse, const at::Tensor &gradOut,
                                              const at::Tensor &cuSeqlensQ,
                                              const at::Tensor &cuSeqlensK,
                                              at::TensorList captures = {});

} // namespace attn::torchop

#endif // FRONTEND_TORCH_CPUATTENTION_H
