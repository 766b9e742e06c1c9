// Shared IR emission for the attention kernels (attn-tile, attn-derive-backward and
// attn-tile-gpu): kernel signatures, mask-aware loop bounds and block classification, tiles,
// and the score_mod. One place defines what a score is and which keys a query row may see.
#ifndef PASSES_KERNELEMITTER_H
#define PASSES_KERNELEMITTER_H

#include "dialects/attn/AttnDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <optional>
#include <tuple>
#include <utility>

namespace mlir::attn {

/// Rows per query tile and keys per key/value block of the CPU kernels.
struct TileSizes {
  int64_t query = 32;
  int64_t key = 64;
};

class KernelEmitter {
public:
  KernelEmitter(AttentionOp op, OpBuilder &builder, TileSizes tiles);

  /// The largest head dim (D, Dv) the tiled kernels take.
  static constexpr int64_t kMaxHeadDim = 1024;
  /// Rejects what the tiled kernels do not lower yet, with a diagnostic on the op.
  static LogicalResult checkLowerable(AttentionOp op);

  /// `memref<?x?x?x?xf32>` with dynamic strides and a unit last stride.
  MemRefType view4Type() const;
  /// `memref<?x?x?xf32>` with dynamic strides (lse, delta).
  MemRefType view3Type() const;

  /// `memref<?xi64>`: the per-batch key lengths of an op with `kv_lengths`.
  MemRefType lengthsType() const;

  /// A captured tensor as the kernels take it: a memref of its shape (identity layout: the
  /// run time passes captures contiguous).
  MemRefType captureType(RankedTensorType type) const;
  /// `memref<?xi32>`: one flag per capture, set to 1 by a read out of its bounds.
  MemRefType faultType() const;
  /// `memref<?x?x?x?xi8>`: the block map, [B or 1, H or 1, query tiles, key blocks] of the
  /// kernels' tile sizes; entries 0 empty, 1 full, 2 partial, anything else unclassified.
  MemRefType blockMapType() const;
  /// Whether the block map of `op` has a batch and a head dimension (else size 1): its mask
  /// region reads b (or the op has kv_lengths), and reads h.
  static std::pair<bool, bool> blockMapDependence(AttentionOp op);

  /// Creates `func.func @name(views..., [%kv_lengths,] [captures..., %fault,] %batch: index,
  /// %head: index, %start: index)` with the C interface, before `anchor`, and positions the
  /// builder in its body. The key lengths argument is there when the op has `kv_lengths`; the
  /// captures (captureType) and the fault flags when it has captures.
  /// With `withCaptureGradients`, one more memref per f32 capture follows the fault flags:
  /// the gradient of that capture, accumulated into (the dQ kernel's). With `withBlockMap`
  /// and a mask region, the block map (blockMapType) comes last before the grid: the blocks'
  /// classifications, shared by the forward and backward kernels (tile_mask_classify's map).
  func::FuncOp createKernel(StringRef name, ArrayRef<Type> viewTypes, Operation *anchor,
                            bool withCaptureGradients = false, bool withBlockMap = false);
  /// The kernel's trailing (batch, head, start) arguments.
  static std::tuple<Value, Value, Value> gridArguments(func::FuncOp kernel);

  /// The number of keys batch `batch` has: the key view's length, or, with `kv_lengths`,
  /// min(that, max(0, kv_lengths[batch])): ragged batches share one launch.
  Value keyLengthOf(Value keys, Value batch);

  Value index(int64_t value);
  Value f32(double value);
  Value minIndex(Value a, Value b);
  Value maxIndex(Value a, Value b);
  Value dim(Value memref, int64_t dimension);
  /// sitofp of an index.
  Value toF32(Value indexValue);

  /// The keys of [lo, hi) that query row `row` may attend to (causal and window masks).
  std::pair<Value, Value> keyRangeForRow(Value row, Value lo, Value hi);
  /// The keys any row of the query tile [queryStart, queryStart + rows) may see: both mask
  /// bounds grow with the row, so the first row gives the low end and the last row the high
  /// end. Key blocks outside are never visited.
  std::pair<Value, Value> keyRangeForTile(Value queryStart, Value rows, Value keyLength);
  /// `value` rounded down to a multiple of `multiple`: with a block map, the first block of a
  /// loop starts on the tile grid (a window's first key need not), so that every block a
  /// kernel visits is an entry of the map.
  Value alignDown(Value value, int64_t multiple);
  /// How many of the `tile` rows starting at `start` exist in a sequence of `length`:
  /// max(0, min(tile, length - start)).
  Value validCount(Value start, Value length, int64_t tile);
  /// The query rows in [0, queryLength) that may attend to some key of [lo, hi).
  std::pair<Value, Value> queryRangeForKeys(Value lo, Value hi, Value queryLength);
  /// True when the tile of rows [rowStart, rowStart + tileRows) and keys [keyStart, keyStart +
  /// tileKeys) holds a score that must be masked: padding past either length, or a causal or
  /// window bound inside it. Interior blocks run unmasked.
  Value blockNeedsMask(Value rowStart, int64_t tileRows, Value keyStart, int64_t tileKeys,
                       Value queryLength, Value keyLength);
  /// `attn.tile_mask` of the op's causal and window attributes over a score tile; `fill`
  /// replaces -inf (0 over the probabilities of a folded normalizer).
  void maskTile(Value scores, Value rowStart, Value keyStart, Value queryLength,
                Value keyLength, FloatAttr fill = {});
  /// A static f32 tile: on the kernel's stack up to kMaxStackTileBytes, else on the heap
  /// (freed by releaseTiles, which every kernel calls before it returns).
  Value allocTile(ArrayRef<int64_t> shape);
  void releaseTiles();
  static constexpr int64_t kMaxStackTileBytes = 16 * 1024;
  /// `attn.tile_score_mod` applying the op's score_mod (and the normalizer's multiplier)
  /// over a score tile; no-op without a score_mod.
  /// `cols` keys of the tile are valid.
  void scoreModTile(Value scores, Value rows, Value cols, Value batch, Value head,
                    Value rowStart, Value keyStart, Value derivative);
  /// `attn.tile_capture_gradient`: accumulates the capture gradients of a tile from G (the
  /// gradient w.r.t. the score_mod's result, in `grads`) and the scores the mod read (`raw`),
  /// then turns `grads` into the gradient w.r.t. the raw scores.
  void captureGradientTile(Value raw, Value grads, Value rows, Value cols, Value batch,
                           Value head, Value rowStart, Value keyStart);
  /// Copies the op's normalizer_body region (if any) into `region`.
  void copyNormalizerBody(Region &region);

  /// With a mask region: `attn.tile_mask_classify` of the block of `rows` query rows from
  /// `rowStart` and `cols` keys from `colStart` (0 empty, 1 full, 2 partial); null without one.
  Value classifyBlock(Value rows, Value cols, Value batch, Value head, Value rowStart,
                      Value colStart);
  /// Runs `body(kind)` for a block unless the mask region empties it (kind is the block's
  /// classification, null without a mask region): the skipping of empty blocks.
  void unlessMaskedOut(Value rows, Value cols, Value batch, Value head, Value rowStart,
                       Value colStart, function_ref<void(Value kind)> body);
  /// With a mask region and a partial block (`kind` == 2), `attn.tile_mask_region` over the
  /// score tile.
  void maskRegionTile(Value kind, Value scores, Value rows, Value cols, Value batch,
                      Value head, Value rowStart, Value colStart);

  /// The key/value head read by query head `head` (GQA by index mapping).
  Value kvHeadOf(Value head, Value queryHeads, Value kvHeads);

  Value loadRow(Value memref, ValueRange leadingIndices, int64_t width);
  void storeRow(Value vector, Value memref, ValueRange leadingIndices);
  Value splat(Value scalar, int64_t width);
  Value zeros(int64_t width);
  Value dot(Value a, Value b);

  /// The multiplier applied to q rows: the scale, times the normalizer's score multiplier
  /// (softmax: log2 e) when no score_mod sits in between.
  double queryMultiplier() const;
  /// Turns a raw dot product (with queryMultiplier folded in) into the score the normalizer
  /// reads: applies score_mod, then the normalizer's score multiplier that could not be folded
  /// into q. With `wantDerivative`, also returns d(score)/d(raw) in
  /// natural units (null when it is 1).
  FailureOr<std::pair<Value, Value>> score(Value raw, Value batch, Value head, Value row,
                                           Value key, bool wantDerivative);

  /// `value` where `score` is allowed, 0 where a score_mod masked it (-inf): a masked score has
  /// p = 0 and no gradient whatever the normalizer or the score_mod's derivative gives there.
  Value zeroWhereMasked(Value value, Value score);

  AttentionOp op;
  OpBuilder &b;
  Location loc;
  TileSizes tiles;
  NormalizerAttrInterface normalizer;
  bool rowWise;
  int64_t headDim, valueHeadDim;
  double scale;
  bool causal;
  std::optional<int64_t> window;
  bool hasScoreMod;
  bool hasMask;
  /// The kernel's `kv_lengths` argument (set by createKernel when the op has them).
  Value keyLengths;
  /// The kernel's capture memrefs and fault flags (set by createKernel; empty/null without
  /// captures).
  SmallVector<Value> captures;
  Value fault;
  /// The kernel's capture gradients (createKernel with captureGradients; else empty).
  SmallVector<Value> captureGradients;
  /// The kernel's block map (createKernel with withBlockMap and a mask region; else null).
  Value blockMap;
  SmallVector<Value> heapTiles;
};

/// Name of the kernels generated for `op`: the enclosing function's name, suffixed with the
/// op's position when the function holds several attention ops.
std::string kernelBaseName(AttentionOp op);

} // namespace mlir::attn

#endif // PASSES_KERNELEMITTER_H
