// The fused σReparam-QKV attention block, JIT-compiled from one IR function
// (attn.reparam_linear -> attn.split_heads -> attn.attention, through
// attn-fuse-reparam-attention): the forward kernel takes the power step, runs the QKV product
// on the host GEMM into one buffer [B, S, (Hq + 2 Hkv) D] and hands strided views of it to the
// attention tiles; the backward has the tiles write dQ, dK, dV into views of one gradient
// buffer of that layout, which the σReparam backward reads as its dy. The attention tiles are
// the variant's CpuKernels; the embedding runs them (in parallel) through an AttentionHost.
// Free of MLIR and torch types.
#ifndef RUNTIME_REPARAMATTENTION_H
#define RUNTIME_REPARAMATTENTION_H

#include "runtime/CpuKernels.h"
#include "runtime/ReparamKernels.h"

#include <memory>
#include <string>

namespace attn::runtime {

/// What the block's kernels specialize on: never B, S, E (run-time sizes).
struct ReparamAttentionSpec {
  bool bias = true;
  bool training = false;
  int64_t heads = 1, kvHeads = 1;
  /// The attention: variant, head dim (= value head dim), causal, scale. f32 only; no key
  /// lengths or captures.
  VariantSpec attention;
  std::string cacheKey() const;
};

/// Runs the attention tiles on views the block kernel passes (q, k, v strided views of the
/// QKV buffer). Implemented by the embedding (the torch layer: its intra-op threads). May
/// throw; the block call then throws the same message.
class AttentionHost {
public:
  virtual ~AttentionHost() = default;
  virtual void forward(const View4 &q, const View4 &k, const View4 &v, const View4 &out,
                       const View3 &lse) const = 0;
  /// Writes dq, dk, dv (every element).
  virtual void backward(const View4 &q, const View4 &k, const View4 &v, const View4 &out,
                        const View3 &lse, const View4 &gradOut, const View4 &gradQuery,
                        const View4 &gradKey, const View4 &gradValue) const = 0;
};

/// x [B·S, E], weight [(Hq + 2 Hkv) D, E], bias, gamma, u as for ReparamForwardArgs; qkv
/// [B, S, (Hq + 2 Hkv) D] contiguous (written); out [B, Hq, S, D] and lse [B, Hq, S]
/// (written); v, uNext, scales as for the σReparam forward.
struct ReparamAttentionForwardArgs {
  ReparamMatrix x, weight;
  ReparamVector bias, gamma, u;
  float *qkv = nullptr;
  int64_t batch = 0, length = 0;
  View4 out;
  View3 lse;
  ReparamVector v, uNext, scales;
  const AttentionHost *host = nullptr;
};
/// gradOut [B, Hq, S, D]; x, weight, gamma, qkv, out, lse, v, uNext, scales as the forward
/// left them; gradQkv [B, S, (Hq + 2 Hkv) D] contiguous scratch (written: dQ, dK, dV);
/// gradX (only with computeGradX), gradWeight, gradBias (with bias), gradGamma written.
struct ReparamAttentionBackwardArgs {
  View4 gradOut;
  ReparamMatrix x, weight;
  ReparamVector gamma;
  float *qkv = nullptr;
  int64_t batch = 0, length = 0;
  View4 out;
  View3 lse;
  ReparamVector v, uNext, scales;
  float *gradQkv = nullptr;
  ReparamMatrix gradX, gradWeight;
  ReparamVector gradBias, gradGamma;
  bool computeGradX = true;
  const AttentionHost *host = nullptr;
};

class ReparamAttentionKernels {
public:
  virtual ~ReparamAttentionKernels() = default;
  /// Each kernel compiles (or comes from the disk cache) on its first call; thread-safe.
  /// Throws CompileError, or std::runtime_error with the host GEMM's or AttentionHost's
  /// message.
  virtual void forward(const ReparamAttentionForwardArgs &args) const = 0;
  virtual void backward(const ReparamAttentionBackwardArgs &args) const = 0;
  /// The fused function's IR (generic form, canonicalized): what the cache keys on.
  virtual const std::string &sourceIr() const = 0;
};

/// One per key however many threads ask. Throws CompileError (bad variant, captures, no host
/// GEMM installed).
std::shared_ptr<const ReparamAttentionKernels>
getReparamAttentionKernels(const ReparamAttentionSpec &spec);

} // namespace attn::runtime

#endif // RUNTIME_REPARAMATTENTION_H
