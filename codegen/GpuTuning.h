// GPU targets and the tuning table of the attention kernels (tile sizes, pipeline stages and
// warps per head dim and target). Free of MLIR types: the runtime and attnc include it.
#ifndef CODEGEN_GPUTUNING_H
#define CODEGEN_GPUTUNING_H

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace attn::codegen {

enum class GpuTarget { Sm80, Sm90a };

/// "sm_80" / "sm_90a"; nullopt for anything else.
std::optional<GpuTarget> parseGpuTarget(std::string_view name);
/// The chip name of `#nvvm.target` and ptxas -arch: "sm_80", "sm_90a".
const char *gpuChip(GpuTarget target);
/// PTX ISA feature string for the NVPTX backend ("+ptx80").
const char *gpuPtxFeatures(GpuTarget target);
/// Shared memory one CTA may use (opt-in maximum): 163 KiB on sm_80, 227 KiB on sm_90a.
int64_t gpuSharedMemoryLimit(GpuTarget target);

/// Tile shape of the generated kernels. Forward: each warp owns 16 query rows, K/V blocks of
/// `keyTile` keys stream through `stages` shared buffers. Backward: `backwardWarps` warps,
/// blocks of `backwardKeyTile` (keys for dQ, queries for dK/dV), two stages.
struct GpuTileConfig {
  int64_t warps = 4;
  int64_t keyTile = 64;
  int64_t stages = 2;
  int64_t backwardWarps = 4;
  int64_t backwardKeyTile = 32;
  /// sm_90a: the forward's S = Q K^T on warpgroup MMAs (wgmma) instead of mma.sync. Off in
  /// the table until it is validated on an H100 (test/gpu/ptx-numerics.py).
  bool wgmma = false;
  /// Queries per streamed block of the dK/dV kernel; 0: backwardKeyTile. At D = 128 its 128
  /// accumulator registers per thread leave no room for 32-query score tiles (ptxas spills).
  int64_t keyValueQueryTile = 0;
};

/// The tuned tiles for a target and head dims; nullopt when the head dims are not supported
/// (the kernels take multiples of 16 up to 128: register budget of the f32 accumulators).
std::optional<GpuTileConfig> lookupGpuTiles(GpuTarget target, int64_t headDim,
                                            int64_t valueHeadDim);
/// One line naming what lookupGpuTiles accepts, for error messages.
std::string supportedGpuHeadDims();

} // namespace attn::codegen

#endif // CODEGEN_GPUTUNING_H
