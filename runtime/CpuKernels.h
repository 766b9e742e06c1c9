// JIT-compiled CPU attention kernels for one variant. This header is free of MLIR and torch
// types so that the torch layer and the models include it cheaply.
#ifndef RUNTIME_CPUKERNELS_H
#define RUNTIME_CPUKERNELS_H

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace attn::runtime {

/// A float32 view with element strides; the last stride must be 1. Broadcast dimensions may
/// have stride 0.
template <int Rank> struct View {
  float *data = nullptr;
  int64_t sizes[Rank] = {};
  int64_t strides[Rank] = {};
};
using View4 = View<4>;
using View3 = View<3>;

/// Per-batch key lengths (`[B]`, contiguous int64) of a variant with `keyLengths`: batch b
/// attends to its first min(Sk, max(0, data[b])) keys.
struct KeyLengths {
  const int64_t *data = nullptr;
  int64_t size = 0;
};

/// The classifications of a call's (query tile, key block) pairs by its variant's mask region,
/// shared by the forward and backward kernels (attn.tile_mask_classify's map): int8,
/// contiguous, [B or 1, H or 1, ceil(Sq / queryTile), ceil(Sk / keyTile)] as blockMapLayout
/// says. Entries are 0 (empty: skipped), 1 (full: unmasked), 2 (partial); a new map is filled
/// with 3 (unclassified): the first kernel to visit a block classifies it and writes the entry,
/// every later kernel and call reads it. A map stays valid while the call's lengths, key
/// lengths and the captures the mask region reads are unchanged.
struct BlockMap {
  int8_t *data = nullptr;
  int64_t sizes[4] = {};
};

/// What a variant's block map depends on.
struct BlockMapLayout {
  /// The variant has a mask region: its kernels take a block map.
  bool present = false;
  /// The map has a batch dimension (the region reads b, or the variant has key lengths) and
  /// a head dimension (the region reads h); otherwise they are 1.
  bool perBatch = false;
  bool perHead = false;
  /// The call captures (indices in the call's order) the mask region reads.
  std::vector<size_t> maskCaptures;
};

/// The element types a captured tensor may have in the IR (f32, i32, i64).
enum class CaptureElement { Float32, Int32, Int64 };

/// A captured tensor as a call passes it, as far as it decides the kernels (and the cache
/// key): its rank and whether its elements are floating (for an f32 capture) or integers or
/// bools (for an i32 or i64 capture). The call converts it to the IR's element type.
struct CaptureSignature {
  int64_t rank = 0;
  bool floating = false;
  /// What the call passed, for messages only (not part of the key), e.g. "an int64 tensor of
  /// shape [2, 9]".
  std::string description;
};

/// What a variant's IR declares for one capture (a function argument that feeds the
/// attn.attention's `captures`), in the order the call passes them.
struct CaptureDeclaration {
  CaptureElement element = CaptureElement::Float32;
  /// The sizes written in the IR, -1 where dynamic: every call's capture must match them.
  std::vector<int64_t> sizes;
  /// The IR type as written, e.g. "tensor<4x8xf32>", and the function argument, e.g.
  /// "argument 4 of @f", for messages.
  std::string type;
  std::string argument;
};

/// One captured tensor of a call: contiguous (row-major), of its declaration's element type.
struct CaptureView {
  const void *data = nullptr;
  std::vector<int64_t> sizes;
};

/// The captured tensors of one call as the kernels take them: the memref descriptors laid out
/// once per call (a tile only passes pointers to them) and one fault flag per kernel capture,
/// zero until a region reads outside that capture. Made by CpuKernels::bindCaptures; the
/// tiles of one call share it (the kernels only ever set flags to 1).
class CaptureArguments {
public:
  CaptureArguments() = default;
  CaptureArguments(const CaptureArguments &) = delete;
  CaptureArguments &operator=(const CaptureArguments &) = delete;
  CaptureArguments(CaptureArguments &&) = default;
  CaptureArguments &operator=(CaptureArguments &&) = default;

  /// Descriptor pointers in the kernels' order: one per kernel capture, then the fault flags.
  /// Empty for a variant without captures.
  const std::vector<void *> &pointers() const { return pointers_; }

private:
  friend class CaptureBinder;
  std::vector<int64_t> words_;   ///< the descriptors, {ptr, ptr, offset, sizes, strides} each
  std::vector<int32_t> fault_;   ///< one flag per kernel capture
  std::vector<size_t> callIndex_; ///< the call's capture index of each kernel capture
  std::vector<std::vector<int64_t>> sizes_; ///< per kernel capture, for messages
  std::vector<void *> pointers_;
};

/// A call that does not fit its variant (a capture of the wrong shape, a region that read
/// outside a capture): the message names the capture and the numbers.
class CallError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// What a kernel specializes on (README invariant 2): never batch, heads or lengths.
struct VariantSpec {
  /// A normalizer name with parameters (`softmax`, `sigmoid(bias=-3.5)`, `relu(scale=0.01)`,
  /// any the dialect defines; runtime/Normalizers.h), or `mlir:` followed by the text of a
  /// module whose first attn.attention defines the variant (its B, H, S become dynamic).
  std::string variant = "softmax";
  int64_t headDim = 64;
  int64_t valueHeadDim = 64;
  bool causal = false;
  /// Overrides the variant's scale; absent means the variant's own, else 1/sqrt(headDim).
  std::optional<double> scale;
  /// The inputs are bfloat16 values (in the f32 views): the products may round their operands
  /// to bf16, exact for q, k, v and dO, with P and dS rounded as the GPU kernels do, and use
  /// the host's AVX512-BF16 dot products.
  bool bfloat16 = false;
  /// The kernels take per-batch key lengths (the op's `kv_lengths`): one launch serves a
  /// ragged batch padded to its longest sequence.
  bool keyLengths = false;
  /// The call's captured tensors (only `mlir:` variants whose score_mod or mask regions read
  /// them): their count, ranks and element kinds select the kernels; their sizes do not.
  std::vector<CaptureSignature> captures;
  /// The dQ kernel also accumulates the gradients of the f32 captures (the backward of a call
  /// whose floating captures require grad): backwardQueryTile then takes their buffers.
  bool captureGradients = false;

  std::string cacheKey() const;
};

/// A variant that cannot be built: bad variant string, unparsable IR, a custom normalizer
/// that cannot be differentiated, ... The message says what was expected.
class CompileError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// The three tiled kernels of a variant. Work is split into tiles that may run concurrently
/// on any threads: forward and dQ over (batch, query head, query tile), dK/dV over (batch,
/// key/value head, key tile). Shapes: q [B,Hq,Sq,D], k [B,Hkv,Sk,D], v [B,Hkv,Sk,Dv],
/// o [B,Hq,Sq,Dv]; `lse` [B,Hq,Sq] holds the base-2 log-sum-exp of row-wise normalizers;
/// `delta` [B,Hq,Sq] holds rowsum(dO * O) (read only by row-wise normalizers).
/// With key lengths, the kernels read only the first `lengths.data[b]` keys of batch b and
/// write no dK/dV rows at and past them: the caller zero-fills those (a key that no query
/// sees has zero gradients).
/// With captures, every tile takes the call's CaptureArguments (bindCaptures) and the call
/// asks checkCaptureFaults after its last tile: a region that indexed outside a capture makes
/// the call an error, never a result.
class CpuKernels {
public:
  virtual ~CpuKernels() = default;

  virtual int64_t queryTile() const = 0;
  virtual int64_t keyTile() const = 0;
  /// Row-wise normalizers (softmax) need `lse` from the forward and `delta` in the backward.
  virtual bool rowWise() const = 0;
  /// Milliseconds this variant's forward took to become callable: IR, then the disk cache or
  /// the compiler, then loading. 0-ish on later calls is not reported: those hit memory.
  virtual double compileMillis() const = 0;
  /// The backward kernels (dQ, dK/dV) are compiled, or read from the disk cache, on first
  /// use, not with the forward: an inference process never pays for them. This does it now
  /// if not yet done; thread-safe, once however many threads ask; throws CompileError (a
  /// failed attempt is retried by the next call). The backward tiles call it themselves.
  virtual void prepareBackward() const = 0;

  /// What the variant's block map depends on (layout.present: the kernels take one).
  virtual const BlockMapLayout &blockMapLayout() const = 0;

  /// `map`: the call's block map (variants with a mask region); null classifies every block
  /// in the kernel.
  virtual void forwardTile(const View4 &q, const View4 &k, const View4 &v, const View4 &o,
                           const View3 &lse, int64_t batch, int64_t head,
                           int64_t queryStart,
                           const KeyLengths &lengths = {},
                           const CaptureArguments *captures = nullptr,
                           const BlockMap *map = nullptr) const = 0;
  virtual void backwardQueryTile(const View4 &q, const View4 &k, const View4 &v,
                                 const View4 &gradOut, const View3 &lse, const View3 &delta,
                                 const View4 &gradQuery, int64_t batch, int64_t head,
                                 int64_t queryStart,
                           const KeyLengths &lengths = {},
                           const CaptureArguments *captures = nullptr,
                           const CaptureArguments *captureGradients = nullptr,
                           const BlockMap *map = nullptr) const = 0;
  virtual void backwardKeyTile(const View4 &q, const View4 &k, const View4 &v,
                               const View4 &gradOut, const View3 &lse, const View3 &delta,
                               const View4 &gradKey, const View4 &gradValue, int64_t batch,
                               int64_t kvHead, int64_t keyStart,
                           const KeyLengths &lengths = {},
                           const CaptureArguments *captures = nullptr,
                           const BlockMap *map = nullptr) const = 0;

  /// What the variant's IR declares for each capture, in the call's order.
  virtual const std::vector<CaptureDeclaration> &captures() const = 0;
  /// Checks a call's captures (count, and sizes against the IR's static ones) and lays them
  /// out for the kernels with fresh fault flags. `views[i]` is the call's capture i, converted
  /// to captures()[i].element and contiguous; it must outlive the call. Throws CallError.
  virtual CaptureArguments bindCaptures(const std::vector<CaptureView> &views) const = 0;
  /// With spec.captureGradients: the gradient buffers of one thread's dQ tiles, laid out for
  /// the kernels. `gradients[i]` is the buffer of the call's capture i (f32, contiguous, its
  /// capture's sizes, accumulated into; ignored for integer captures). Each thread running dQ
  /// tiles needs its own (the kernels add without atomics); the call sums them.
  virtual CaptureArguments bindCaptureGradients(const std::vector<CaptureView> &gradients) const = 0;
  /// After a call's last tile: throws CallError naming the first capture a region read
  /// outside of (its shape and the IR type).
  virtual void checkCaptureFaults(const CaptureArguments &captures) const = 0;
};

/// The most memref arguments a CPU kernel takes (each a pointer to its descriptor): dK/dV's
/// eight views (dQ's seven and, with capture gradients, one buffer per f32 capture), the key
/// lengths, the captures and the fault flags must fit; more is a CompileError.
constexpr int kMaxKernelPointers = 32;

/// Whether the caller will ask for the backward kernels (prepareBackward). With the JIT's
/// speculative backward on (JitConfig::speculateBackward), a first call that expects them
/// compiles dQ and dK/dV beside the forward at the caller's priority, one that does not expect
/// them compiles none, and Unknown compiles them at a lower priority than the forward.
enum class BackwardUse { Unknown, Expected, NotExpected };

/// Returns the compiled kernels of a variant, compiling on first use; thread-safe, and one
/// compilation per key however many threads ask (the first call's `backwardUse` decides the
/// speculation). Throws CompileError.
std::shared_ptr<const CpuKernels> getCpuKernels(const VariantSpec &spec,
                                                BackwardUse backwardUse = BackwardUse::Unknown);

} // namespace attn::runtime

#endif // RUNTIME_CPUKERNELS_H
