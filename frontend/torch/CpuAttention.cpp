#include "frontend/torch/CpuAttention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <vector>

namespace attn::torchop {
namespace {

std::shared_ptr<const runtime::CpuKernels> loadKernels(const runtime::VariantSpec &spec,
                                                       bool backward = false) {
  try {
    std::shared_ptr<const runtime::CpuKernels> kernels = runtime::getCpuKernels(spec);
    // The backward kernels compile on first use: here, so that a failure is a TORCH_CHECK
    // rather than an exception inside the parallel tiles.
    if (backward)
      kernels->prepareBackward();
    return kernels;
  } catch (const runtime::CompileError &error) {
    TORCH_CHECK(false, error.what());
  }
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

at::ScalarType dtypeOf(runtime::CaptureElement element) {
  switch (element) {
  case runtime::CaptureElement::Float32:
    return at::kFloat;
  case runtime::CaptureElement::Int32:
    return at::kInt;
  case runtime::CaptureElement::Int64:
    return at::kLong;
  }
  return at::kFloat;
}

/// A call's captures as the kernels take them: converted to the IR's element types and
/// contiguous (kept alive by `storage`), checked against the IR's static sizes, with fresh
/// fault flags.
runtime::CaptureArguments bindCaptures(const runtime::CpuKernels &kernels,
                                       at::TensorList captures, std::vector<at::Tensor> &storage) {
  const std::vector<runtime::CaptureDeclaration> &declared = kernels.captures();
  TORCH_CHECK(declared.size() == captures.size(), "attn::attention: the variant reads ",
              declared.size(), " captured tensors, the call passes ", captures.size());
  std::vector<runtime::CaptureView> views;
  for (size_t i = 0; i < captures.size(); ++i) {
    storage.push_back(captures[i].to(dtypeOf(declared[i].element)).contiguous());
    runtime::CaptureView view;
    view.data = storage.back().data_ptr();
    view.sizes.assign(storage.back().sizes().begin(), storage.back().sizes().end());
    views.push_back(std::move(view));
  }
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

} // namespace

AttentionForward cpuAttentionForward(const runtime::VariantSpec &spec, const at::Tensor &q,
                                     const at::Tensor &k, const at::Tensor &v,
                                     const c10::optional<at::Tensor> &kvLengths,
                                     at::TensorList captures) {
  // Compiled even when there is nothing to compute, so that a bad variant always fails.
  std::shared_ptr<const runtime::CpuKernels> kernels = loadKernels(spec);
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
  const runtime::View4 qv = viewOf<4>(qf), kv = viewOf<4>(kf), vv = viewOf<4>(vf),
                       ov = viewOf<4>(result.out);
  const runtime::View3 lsev = viewOf<3>(result.lse);
  forEachTile(batches, heads, queries, kernels->queryTile(),
              [&](int64_t batch, int64_t head, int64_t queryStart) {
                kernels->forwardTile(qv, kv, vv, ov, lsev, batch, head, queryStart, lengths,
                                     &bound);
              });
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
  // Capture gradients: per floating capture, one zeroed buffer per thread that runs dQ tiles
  // (the kernels add without atomics), bound once per thread, summed after the tiles.
  std::vector<at::Tensor> gradientBuffers(captures.size());
  std::vector<runtime::CaptureArguments> threadGradients;
  const int64_t threads = spec.captureGradients ? at::get_num_threads() : 0;
  if (spec.captureGradients) {
    for (size_t i = 0; i < captures.size(); ++i)
      if (at::isFloatingType(captures[i].scalar_type())) {
        std::vector<int64_t> sizes{threads};
        sizes.insert(sizes.end(), captures[i].sizes().begin(), captures[i].sizes().end());
        gradientBuffers[i] = at::zeros(sizes, floatOptions);
      }
    for (int64_t thread = 0; thread < threads; ++thread) {
      std::vector<runtime::CaptureView> views(captures.size());
      for (size_t i = 0; i < captures.size(); ++i) {
        views[i].sizes = captures[i].sizes().vec();
        if (gradientBuffers[i].defined())
          views[i].data = gradientBuffers[i][thread].data_ptr<float>();
      }
      threadGradients.push_back(kernels->bindCaptureGradients(views));
    }
  }
  auto captureGradients = [&] {
    std::vector<at::Tensor> summed(captures.size());
    for (size_t i = 0; i < captures.size(); ++i)
      if (gradientBuffers[i].defined())
        summed[i] = gradientBuffers[i].sum(0);
    return summed;
  };
  if (hasNoKeysOrQueries(q, k)) {
    return {at::zeros(q.sizes(), floatOptions), at::zeros(k.sizes(), floatOptions),
            at::zeros(v.sizes(), floatOptions),
            spec.captureGradients ? captureGradients() : std::vector<at::Tensor>{}};
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

  const runtime::View4 qv = viewOf<4>(qf), kv = viewOf<4>(kf), vv = viewOf<4>(vf),
                       gradOutv = viewOf<4>(gradOutF), gradQv = viewOf<4>(grads.q),
                       gradKv = viewOf<4>(grads.k), gradVv = viewOf<4>(grads.v);
  const runtime::View3 lsev = viewOf<3>(lse), deltav = viewOf<3>(delta);
  forEachTile(q.size(0), q.size(1), q.size(2), kernels->queryTile(),
              [&](int64_t batch, int64_t head, int64_t queryStart) {
                const runtime::CaptureArguments *gradients = nullptr;
                if (spec.captureGradients) {
                  const int64_t thread = at::get_thread_num();
                  TORCH_CHECK(thread >= 0 && thread < threads, "attn::attention: dQ tile on "
                              "thread ", thread, " of ", threads);
                  gradients = &threadGradients[thread];
                }
                kernels->backwardQueryTile(qv, kv, vv, gradOutv, lsev, deltav, gradQv, batch,
                                           head, queryStart, lengths, &bound, gradients);
              });
  forEachTile(k.size(0), k.size(1), k.size(2), kernels->keyTile(),
              [&](int64_t batch, int64_t kvHead, int64_t keyStart) {
                kernels->backwardKeyTile(qv, kv, vv, gradOutv, lsev, deltav, gradKv, gradVv,
                                         batch, kvHead, keyStart, lengths, &bound);
              });
  checkCaptureFaults(*kernels, bound);
  if (spec.captureGradients)
    grads.captures = captureGradients();
  return grads;
}

} // namespace attn::torchop
