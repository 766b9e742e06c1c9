// What the CPU lowering of the tile ops shares: the host's vector unit and small IR builders.
#ifndef PASSES_CPUTILELOWERING_H
#define PASSES_CPUTILELOWERING_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>

namespace mlir::attn {

/// How products with bf16 operands run for bfloat16 inputs: not at all (f32 FMAs), as
/// AVX512-BF16 pair dot products, or on AMX tiles (with f32 FMAs for the shapes AMX does not
/// take).
enum class Bf16Products { None, Avx512, Amx };

/// Vector width (f32 lanes) and vector register count of the host.
struct VectorTarget {
  int64_t lanes = 16;
  int64_t registers = 32;
  int64_t microKernelRows = 0;    // 0: chosen from the register file
  int64_t microKernelVectors = 0;
  /// Products round their operands to bf16 (16 lanes only).
  Bf16Products bf16Products = Bf16Products::None;
};

/// Small builders shared by the patterns.
struct Emit {
  OpBuilder &b;
  Location loc;

  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value f32(double v) { return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v)); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  /// The zero vector of `type`, float or integer elements.
  Value zeros(VectorType type) {
    return arith::ConstantOp::create(b, loc, cast<TypedAttr>(b.getZeroAttr(type)));
  }
  /// `vector` rounded to bf16 (to nearest even).
  Value toBf16(Value vector) {
    auto type = cast<VectorType>(vector.getType());
    return arith::TruncFOp::create(b, loc, type.clone(b.getBF16Type()), vector);
  }
  Value splat(Value scalar, int64_t width) {
    return vector::BroadcastOp::create(b, loc, VectorType::get({width}, scalar.getType()),
                                       scalar);
  }
  /// [0, 1, ..., width - 1] as a vector of `element` (index or an integer type).
  Value iota(int64_t width, Type element) {
    SmallVector<int64_t> lanes;
    for (int64_t j = 0; j < width; ++j)
      lanes.push_back(j);
    auto type = VectorType::get({width}, element);
    return arith::ConstantOp::create(b, loc, type, DenseElementsAttr::get(type, ArrayRef(lanes)));
  }
  /// The key indices [start, start + width) of a score row, as vector<width x index>.
  Value keyIndices(Value start, int64_t width) {
    return arith::AddIOp::create(b, loc, iota(width, b.getIndexType()), splat(start, width));
  }
  /// keyIndices with the lanes at and past `valid` keys held at the last valid key (the
  /// first when none is): what a region evaluates for padding lanes, whose scores are masked
  /// anyway, so that it never sees a key index past the sequence.
  Value validKeyIndices(Value start, Value valid, int64_t width) {
    Value last = arith::MaxSIOp::create(b, loc, arith::SubIOp::create(b, loc, valid, index(1)),
                                        index(0));
    Value lanes = arith::MinSIOp::create(b, loc, iota(width, b.getIndexType()),
                                         splat(last, width));
    return arith::AddIOp::create(b, loc, lanes, splat(start, width));
  }
  /// `value` as a vector of `width` (a replayed formula may come back uniform).
  Value asVector(Value value, int64_t width) {
    return isa<VectorType>(value.getType()) ? value : splat(value, width);
  }
  Value loadVector(Value memref, ValueRange indices, int64_t width) {
    return vector::LoadOp::create(b, loc, VectorType::get({width}, b.getF32Type()), memref,
                                  indices);
  }
  void storeVector(Value vector, Value memref, ValueRange indices) {
    vector::StoreOp::create(b, loc, vector, memref, indices);
  }
  Value load(Value memref, ValueRange indices) {
    return memref::LoadOp::create(b, loc, memref, indices);
  }
  void store(Value value, Value memref, ValueRange indices) {
    memref::StoreOp::create(b, loc, value, memref, indices);
  }
  /// for (i = lo; i < hi; i += step) body(i)
  void loop(Value lo, Value hi, int64_t step, function_ref<void(Value)> body) {
    scf::ForOp::create(b, loc, lo, hi, index(step), ValueRange{},
                       [&](OpBuilder &, Location, Value i, ValueRange) {
                         body(i);
                         scf::YieldOp::create(b, loc);
                       });
  }
  void loop(int64_t hi, function_ref<void(Value)> body) { loop(index(0), index(hi), 1, body); }
  /// p where s is a score, 0 where it is masked (-inf).
  Value zeroWhereMasked(Value value, Value scores) {
    int64_t width = cast<VectorType>(scores.getType()).getNumElements();
    Value masked = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, scores,
                                         splat(f32(-INFINITY), width));
    return arith::SelectOp::create(b, loc, masked, splat(f32(0.0), width), value);
  }
};

inline ArrayRef<int64_t> shapeOf(Value tile) {
  return cast<MemRefType>(tile.getType()).getShape();
}

/// math.exp2, exp and tanh as the CPU's portable polynomials (CpuFastMath.cpp;
/// attn-cpu-fast-math, whose avx512 option adds AVX-512 forms with the same values at +-inf
/// and NaN).
void populateCpuFastMathPatterns(RewritePatternSet &patterns);

/// Unit attribute the lowering of a folded tile_normalize puts on the op that yields p: its
/// argument u is never +inf (masks apply after it), which attn-cpu-fast-math may rely on
/// (sigmoid's reciprocal then needs no guard against 1 + 2^u = +inf).
inline constexpr llvm::StringLiteral kNoPositiveInfinityAttr = "attn.no_positive_infinity";

/// tile_matmul as register-blocked micro-kernels (TileMatmulCpu.cpp).
void populateTileMatmulCpuPatterns(RewritePatternSet &patterns, VectorTarget target);

/// attn.tile_mask_classify and attn.tile_mask_region: the mask region replayed over vectors
/// of key indices (MaskRegionCpu.cpp).
void populateMaskRegionCpuPatterns(RewritePatternSet &patterns, VectorTarget target);
/// attn.tile_capture_gradient (CapturesCpu.cpp).
void populateCaptureGradientCpuPatterns(RewritePatternSet &patterns);
/// Per AMX product, its lhs and rhs already packed to bf16 (null where not).
using AmxPackedOperands = DenseMap<Operation *, std::pair<Value, Value>>;
/// Before the patterns: an operand tile that one tile_load fills for one AMX product alone is
/// packed straight from the load's source where the load was, and the load erased: no f32
/// tile copy, and q's pack stays outside the key loop with its load (TileMatmulAmx.cpp).
void packLoadedAmxOperands(ModuleOp module, VectorTarget target, AmxPackedOperands &packed);
/// tile_matmul on AMX tiles where the shapes allow (TileMatmulAmx.cpp); tried first.
void populateTileMatmulAmxPatterns(RewritePatternSet &patterns, VectorTarget target,
                                   const AmxPackedOperands *packed);

//===----------------------------------------------------------------------===//
// bf16 operands (TileMatmulCpu.cpp)
//===----------------------------------------------------------------------===//

/// A static bf16 buffer at the kernel's entry: on the stack when small, else on the heap and
/// freed before the kernel returns (kernels may run on threads with small stacks).
Value allocBf16Buffer(OpBuilder &builder, Operation *op, ArrayRef<int64_t> shape);
/// dst[p][2c + t] = bf16(src[2p + t][c]) for p < pairs: rows 2p and 2p + 1 of `src`
/// interleaved (the pairs AVX512-BF16 and AMX multiply), rows at or past `depth` zero.
void packRowPairs(Emit &e, Value src, Value dst, Value pairs, Value depth, int64_t lanes);
/// dst[i][c] = bf16(src[i][c]) for every row; columns at or past `depth` zero when given.
void packRows(Emit &e, Value src, Value dst, Value depth, int64_t lanes);

} // namespace mlir::attn

#endif // PASSES_CPUTILELOWERING_H
