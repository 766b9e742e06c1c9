#include "frontend/torch/InputChecks.h"

#include <c10/util/Exception.h>

namespace attn::torchop {
namespace {

void checkRank(const at::Tensor &tensor, const char *name, const char *layout) {
  TORCH_CHECK(tensor.dim() == 4, "attn::attention: ", name, " must be ", layout,
              " (rank 4), got rank ", tensor.dim());
}

bool isSupportedDtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf ||
         dtype == at::kDouble;
}

/// Where a layout keeps its sizes: the padded op's q [B, Hq, Sq, D] and the packed op's
/// q [Tq, Hq, D] differ in the key length's dimension and name and in the head dim's dimension.
struct QkvLayout {
  const char *op;           ///< the message prefix, e.g. "attn::attention: "
  int64_t lengthDim;        ///< k's and v's length dimension
  const char *lengthName;   ///< its name in messages: Sk or Tk
  int64_t headDimIndex;     ///< the head dims' dimension (the last)
};

/// The checks both layouts share (ranks and, for the padded one, the batch are checked by the
/// caller): one supported dtype and device, matching heads (GQA), lengths and head dims, and
/// scale > 0. `betweenDeviceAndSizes` runs after the device checks (the padded layout's batch).
template <typename Between>
void checkQkv(const QkvLayout &layout, const at::Tensor &q, const at::Tensor &k,
              const at::Tensor &v, c10::optional<double> scale,
              const Between &betweenDeviceAndSizes) {
  const char *op = layout.op;
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              "q, k and v must have one dtype, got ", q.scalar_type(), ", ", k.scalar_type(),
              " and ", v.scalar_type());
  TORCH_CHECK(isSupportedDtype(q.scalar_type()), op,
              "expected float32, bfloat16, float16 or float64 tensors, got ", q.scalar_type());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), op,
              "q, k and v must be on one device, got ", q.device(), ", ", k.device(), " and ",
              v.device());
  // Meta tensors come from torch.compile's tracing (fake tensors) and shape-only calls.
  TORCH_CHECK(q.device().is_cpu() || q.device().is_cuda() || q.device().is_meta(), op,
              "expected CPU or CUDA tensors, got tensors on ", q.device());
  betweenDeviceAndSizes();
  const int64_t length = layout.lengthDim, headDim = layout.headDimIndex;
  TORCH_CHECK(v.sym_size(1) == k.sym_size(1), op,
              "k and v must have the same number of heads Hkv, got ", k.sym_size(1), " and ",
              v.sym_size(1));
  TORCH_CHECK(k.sym_size(1) > 0 ? q.sym_size(1) % k.sym_size(1) == 0 : q.sym_size(1) == 0, op,
              "the query heads Hq = ", q.sym_size(1),
              " must be a multiple of the key/value heads Hkv = ", k.sym_size(1));
  TORCH_CHECK(v.sym_size(length) == k.sym_size(length), op, "k and v must have the same length ",
              layout.lengthName, ", got ", k.sym_size(length), " and ", v.sym_size(length));
  TORCH_CHECK(q.sym_size(headDim) > 0 && v.sym_size(headDim) > 0, op,
              "head dims must be non-empty, got D = ", q.sym_size(headDim), " and Dv = ",
              v.sym_size(headDim));
  TORCH_CHECK(k.sym_size(headDim) == q.sym_size(headDim), op,
              "q and k must have the same head dim D, got ", q.sym_size(headDim), " and ",
              k.sym_size(headDim));
  TORCH_CHECK(!scale || *scale > 0, op, "scale must be > 0, got ", *scale);
}

} // namespace

void checkAttentionInputs(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                          c10::optional<double> scale) {
  checkRank(q, "q", "[B, Hq, Sq, D]");
  checkRank(k, "k", "[B, Hkv, Sk, D]");
  checkRank(v, "v", "[B, Hkv, Sk, Dv]");
  checkQkv({"attn::attention: ", 2, "Sk", 3}, q, k, v, scale, [&] {
    TORCH_CHECK(k.sym_size(0) == q.sym_size(0) && v.sym_size(0) == q.sym_size(0),
                "attn::attention: q, k and v must have one batch size B, got ", q.sym_size(0),
                ", ", k.sym_size(0), " and ", v.sym_size(0));
  });
}

void checkKeyLengths(const at::Tensor &q, const c10::optional<at::Tensor> &kvLengths) {
  if (!kvLengths)
    return;
  const at::Tensor &lengths = *kvLengths;
  TORCH_CHECK(lengths.dim() == 1, "attn::attention: kv_lengths must be [B] (rank 1), got rank ",
              lengths.dim());
  TORCH_CHECK(lengths.sym_size(0) == q.sym_size(0), "attn::attention: kv_lengths must hold one ",
              "length per batch entry, B = ", q.sym_size(0), ", got ", lengths.sym_size(0));
  TORCH_CHECK(!at::isFloatingType(lengths.scalar_type()) &&
                  !at::isComplexType(lengths.scalar_type()) &&
                  lengths.scalar_type() != at::kBool,
              "attn::attention: kv_lengths must be an integer tensor, got ",
              lengths.scalar_type());
  TORCH_CHECK(lengths.device() == q.device(), "attn::attention: kv_lengths must be on q's ",
              "device ", q.device(), ", got ", lengths.device());
}

void checkCaptures(const at::Tensor &q, at::TensorList captures) {
  for (size_t i = 0; i < captures.size(); ++i) {
    const at::Tensor &capture = captures[i];
    TORCH_CHECK(capture.defined(), "attn::attention: capture ", i, " is an undefined tensor");
    TORCH_CHECK(!at::isComplexType(capture.scalar_type()), "attn::attention: capture ", i,
                " must be a floating, integer or bool tensor, got ", capture.scalar_type());
    TORCH_CHECK(capture.device() == q.device(), "attn::attention: capture ", i,
                " must be on q's device ", q.device(), ", got ", capture.device());
  }
}

namespace {

void checkOffsetsTensor(const at::Tensor &q, const at::Tensor &offsets, const char *name) {
  TORCH_CHECK(offsets.dim() == 1, "attn::attention_varlen: ", name,
              " must be [sequences + 1] (rank 1), got rank ", offsets.dim());
  TORCH_CHECK(offsets.sym_size(0) >= 1, "attn::attention_varlen: ", name,
              " must hold sequences + 1 >= 1 offsets, got none");
  TORCH_CHECK(!at::isFloatingType(offsets.scalar_type()) &&
                  !at::isComplexType(offsets.scalar_type()) &&
                  offsets.scalar_type() != at::kBool,
              "attn::attention_varlen: ", name, " must be an integer tensor, got ",
              offsets.scalar_type());
  TORCH_CHECK(offsets.device() == q.device() || offsets.device().is_cpu(),
              "attn::attention_varlen: ", name, " must be on the CPU or on q's device ",
              q.device(), ", got ", offsets.device());
}

} // namespace

void checkPackedInputs(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                       const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                       c10::optional<double> scale) {
  const char *op = "attn::attention_varlen: ";
  TORCH_CHECK(q.dim() == 3, op, "q must be [Tq, Hq, D] (rank 3), got rank ", q.dim());
  TORCH_CHECK(k.dim() == 3, op, "k must be [Tk, Hkv, D] (rank 3), got rank ", k.dim());
  TORCH_CHECK(v.dim() == 3, op, "v must be [Tk, Hkv, Dv] (rank 3), got rank ", v.dim());
  checkQkv({op, 0, "Tk", 2}, q, k, v, scale, [] {});
  checkOffsetsTensor(q, cuSeqlensQ, "cu_seqlens_q");
  checkOffsetsTensor(q, cuSeqlensK, "cu_seqlens_k");
  TORCH_CHECK(cuSeqlensQ.sym_size(0) == cuSeqlensK.sym_size(0), op,
              "cu_seqlens_q and cu_seqlens_k must describe one number of sequences, got ",
              cuSeqlensQ.sym_size(0), " and ", cuSeqlensK.sym_size(0), " offsets");
}

void checkSequenceOffsets(const at::Tensor &offsets, int64_t rows, const char *name) {
  const at::Tensor values = offsets.to(at::kCPU, at::kLong).contiguous();
  const int64_t *data = values.data_ptr<int64_t>();
  TORCH_CHECK(data[0] == 0, "attn::attention_varlen: ", name, " must start at 0, got ", data[0]);
  for (int64_t i = 1; i < values.numel(); ++i)
    TORCH_CHECK(data[i] >= data[i - 1], "attn::attention_varlen: ", name,
                " must not decrease, got ", data[i - 1], " then ", data[i], " at index ", i);
  TORCH_CHECK(data[values.numel() - 1] == rows, "attn::attention_varlen: ", name,
              " must end at the packed length ", rows, ", got ", data[values.numel() - 1]);
}

} // namespace attn::torchop
