#include "runtime/CaptureBinder.h"

#include <algorithm>
#include <cstdint>

namespace attn::runtime {

std::string shapeText(const std::vector<int64_t> &sizes) {
  std::string text = "[";
  for (size_t i = 0; i < sizes.size(); ++i)
    text += (i ? ", " : "") + (sizes[i] < 0 ? std::string("?") : std::to_string(sizes[i]));
  return text + "]";
}

namespace {
/// Appends the descriptor of a contiguous (row-major) tensor at `data` with `sizes`.
void appendDescriptor(std::vector<int64_t> &words, const void *data,
                      const std::vector<int64_t> &sizes) {
  const auto rank = static_cast<int64_t>(sizes.size());
  const auto address = static_cast<int64_t>(reinterpret_cast<intptr_t>(data));
  words.insert(words.end(), {address, address, 0});
  words.insert(words.end(), sizes.begin(), sizes.end());
  std::vector<int64_t> strides(rank, 1);
  for (int64_t d = rank - 2; d >= 0; --d)
    strides[d] = strides[d + 1] * std::max<int64_t>(sizes[d + 1], 1);
  words.insert(words.end(), strides.begin(), strides.end());
}
} // namespace

CaptureArguments CaptureBinder::bind(const std::vector<CaptureDeclaration> &declarations,
                                     const std::vector<size_t> &callIndex,
                                     const std::vector<CaptureView> &views,
                                     const std::string &label, const CapturePlacement &placement) {
  if (views.size() != declarations.size())
    throw CallError(label + ": the kernels take " + std::to_string(declarations.size()) +
                    " captured tensors, the call binds " + std::to_string(views.size()));
  for (size_t i = 0; i < views.size(); ++i) {
    const CaptureDeclaration &declared = declarations[i];
    const std::vector<int64_t> &sizes = views[i].sizes;
    bool fits = sizes.size() == declared.sizes.size();
    for (size_t d = 0; fits && d < sizes.size(); ++d)
      fits = declared.sizes[d] < 0 || declared.sizes[d] == sizes[d];
    if (!fits)
      throw CallError("capture " + std::to_string(i) + " has shape " + shapeText(sizes) +
                      " but the variant declares " + declared.type + " (" + declared.argument +
                      ")");
  }
  CaptureArguments bound;
  if (callIndex.empty())
    return bound;
  // An empty capture has no element to read: its descriptor points at a zero so that the
  // kernels' in-bounds fallback read stays inside memory; any read of it is a fault.
  static const int64_t kNothing[1] = {0};
  const void *nothing = placement.emptyCapture ? placement.emptyCapture : kNothing;
  std::vector<size_t> starts;
  for (size_t index : callIndex) {
    const CaptureView &view = views[index];
    int64_t elements = 1;
    for (int64_t size : view.sizes)
      elements *= size;
    starts.push_back(bound.words_.size());
    appendDescriptor(bound.words_, elements > 0 ? view.data : nothing, view.sizes);
    bound.sizes_.push_back(view.sizes);
  }
  bound.fault_.assign(callIndex.size(), 0);
  bound.callIndex_ = callIndex;
  starts.push_back(bound.words_.size());
  appendDescriptor(bound.words_, placement.faultFlags ? placement.faultFlags : bound.fault_.data(),
                   {static_cast<int64_t>(bound.fault_.size())});
  for (size_t start : starts)
    bound.pointers_.push_back(bound.words_.data() + start);
  return bound;
}

CaptureArguments CaptureBinder::bindGradients(const std::vector<CaptureDeclaration> &declarations,
                                              const std::vector<size_t> &callIndex,
                                              const std::vector<CaptureView> &gradients,
                                              const std::string &label) {
  if (gradients.size() != declarations.size())
    throw CallError(label + ": " + std::to_string(gradients.size()) +
                    " capture gradient buffers for " + std::to_string(declarations.size()) +
                    " captures");
  CaptureArguments bound;
  std::vector<size_t> starts;
  for (size_t index : callIndex) {
    if (declarations[index].element != CaptureElement::Float32)
      continue;
    starts.push_back(bound.words_.size());
    appendDescriptor(bound.words_, gradients[index].data, gradients[index].sizes);
  }
  for (size_t start : starts)
    bound.pointers_.push_back(bound.words_.data() + start);
  return bound;
}

void CaptureBinder::checkFaults(const std::vector<CaptureDeclaration> &declarations,
                                const CaptureArguments &bound) {
  for (size_t slot = 0; slot < bound.fault_.size(); ++slot) {
    if (bound.fault_[slot] == 0)
      continue;
    const size_t index = bound.callIndex_[slot];
    throw CallError("attn::attention: a score_mod or mask region indexed outside capture " +
                    std::to_string(index) + " (" + declarations[index].argument + ", " +
                    declarations[index].type + " in the IR) of shape " +
                    shapeText(bound.sizes_[slot]) +
                    ": the call has no result; pass a capture that covers every index the "
                    "regions compute");
  }
}

std::vector<void *> CaptureBinder::parameterAddresses(const CaptureArguments &bound) {
  std::vector<void *> addresses;
  addresses.reserve(bound.words_.size());
  for (const int64_t &word : bound.words_)
    addresses.push_back(const_cast<int64_t *>(&word));
  return addresses;
}

} // namespace attn::runtime
