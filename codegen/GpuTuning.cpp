// The tuning table. Figures are chosen so that every kernel assembles with ptxas without
// spills and within the target's shared memory (test/codegen/ptxas-check.py checks both);
// on-GPU autotuning is future work.
#include "codegen/GpuTuning.h"

#include <algorithm>

namespace attn::codegen {

std::optional<GpuTarget> parseGpuTarget(std::string_view name) {
  if (name == "sm_80")
    return GpuTarget::Sm80;
  if (name == "sm_90a")
    return GpuTarget::Sm90a;
  return std::nullopt;
}

const char *gpuChip(GpuTarget target) {
  return target == GpuTarget::Sm80 ? "sm_80" : "sm_90a";
}

const char *gpuPtxFeatures(GpuTarget) { return "+ptx80"; }

int64_t gpuSharedMemoryLimit(GpuTarget target) {
  return target == GpuTarget::Sm80 ? 163 * 1024 : 227 * 1024;
}

namespace {
struct TuningEntry {
  GpuTarget target;
  int64_t maxHeadDim; // applies to head dims up to this one (larger of D and Dv)
  GpuTileConfig tiles;
};

// warps, keyTile, stages, backwardWarps, backwardKeyTile, wgmma, keyValueQueryTile
constexpr TuningEntry kTable[] = {
    // sm_80 (A100, 164 KB smem): 64-row query blocks; small heads afford a 3-stage pipeline.
    {GpuTarget::Sm80, 64, {4, 64, 3, 4, 32}},
    {GpuTarget::Sm80, 128, {4, 64, 2, 4, 32, false, 16}},
    // sm_90a (H100, 228 KB smem): 128-row query blocks halve the K/V traffic per query
    // (tiny heads keep 4 warps: their tiles do not split into 16-byte copies over 256 threads).
    {GpuTarget::Sm90a, 32, {4, 64, 3, 4, 32}},
    {GpuTarget::Sm90a, 64, {8, 64, 3, 4, 32}},
    {GpuTarget::Sm90a, 128, {8, 64, 3, 4, 32, false, 16}},
};

/// Whether every tile (rows x head dim) splits into whole 16-byte copies per thread.
bool copiesSplitEvenly(int64_t warps, int64_t columns, int64_t headDim, int64_t valueHeadDim) {
  for (int64_t rows : {16 * warps, columns})
    for (int64_t dim : {headDim, valueHeadDim})
      if ((rows * dim / 8) % (32 * warps) != 0)
        return false;
  return true;
}

/// The table's warp count, or the largest smaller one whose copies split evenly.
std::optional<int64_t> fittingWarps(int64_t preferred, int64_t columns, int64_t headDim,
                                    int64_t valueHeadDim) {
  for (int64_t warps = preferred; warps >= 1; warps /= 2)
    if (copiesSplitEvenly(warps, columns, headDim, valueHeadDim))
      return warps;
  return std::nullopt;
}
} // namespace

std::optional<GpuTileConfig> lookupGpuTiles(GpuTarget target, int64_t headDim,
                                            int64_t valueHeadDim) {
  for (int64_t dim : {headDim, valueHeadDim})
    if (dim < 16 || dim % 16 != 0)
      return std::nullopt;
  int64_t widest = std::max(headDim, valueHeadDim);
  for (const TuningEntry &entry : kTable) {
    if (entry.target != target || widest > entry.maxHeadDim)
      continue;
    GpuTileConfig tiles = entry.tiles;
    auto forward = fittingWarps(tiles.warps, tiles.keyTile, headDim, valueHeadDim);
    auto backward =
        fittingWarps(tiles.backwardWarps, tiles.backwardKeyTile, headDim, valueHeadDim);
    if (!forward || !backward)
      return std::nullopt;
    tiles.warps = *forward;
    tiles.backwardWarps = *backward;
    return tiles;
  }
  return std::nullopt;
}

std::string supportedGpuHeadDims() {
  return "head dims must be multiples of 16 from 16 to 128 (64 and 128 are the tuned ones)";
}

} // namespace attn::codegen
