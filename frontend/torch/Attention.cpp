#include "frontend/torch/Attention.h"

#include "runtime/CpuKernels.h"
#include "runtime/Jit.h"
#include "runtime/Normalizers.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

namespace attn {

at::Tensor attention(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                     const AttentionOptions &options) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("attn::attention", "")
          .typed<at::Tensor(const at::Tensor &, const at::Tensor &, const at::Tensor &,
                            c10::string_view, c10::optional<double>, bool,
                            const c10::optional<at::Tensor> &,
                            const c10::optional<at::TensorList> &)>();
  const c10::optional<double> scale =
      options.scale ? c10::optional<double>(*options.scale) : c10::nullopt;
  const c10::optional<at::Tensor> kvLengths =
      options.kvLengths ? c10::optional<at::Tensor>(*options.kvLengths) : c10::nullopt;
  const c10::optional<at::TensorList> captures =
      options.captures.empty() ? c10::nullopt : c10::optional<at::TensorList>(options.captures);
  return op.call(q, k, v, options.variant, scale, options.causal, kvLengths, captures);
}

at::Tensor attention_varlen(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                            const at::Tensor &cuSeqlensQ, const at::Tensor &cuSeqlensK,
                            const AttentionOptions &options) {
  TORCH_CHECK(!options.kvLengths, "attn::attention_varlen: kv_lengths does not apply to packed "
              "sequences (cu_seqlens_k gives each sequence's keys)");
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("attn::attention_varlen", "")
          .typed<at::Tensor(const at::Tensor &, const at::Tensor &, const at::Tensor &,
                            const at::Tensor &, const at::Tensor &, c10::string_view,
                            c10::optional<double>, bool, const c10::optional<at::TensorList> &)>();
  const c10::optional<double> scale =
      options.scale ? c10::optional<double>(*options.scale) : c10::nullopt;
  const c10::optional<at::TensorList> captures =
      options.captures.empty() ? c10::nullopt : c10::optional<at::TensorList>(options.captures);
  return op.call(q, k, v, cuSeqlensQ, cuSeqlensK, options.variant, scale, options.causal,
                 captures);
}

void wait_for_compiles() { runtime::Jit::instance().waitForBackgroundCompiles(); }

NormalizerInfo normalizer_info(const std::string &name) {
  try {
    return runtime::resolveNormalizer(name);
  } catch (const runtime::CompileError &error) {
    TORCH_CHECK(false, error.what());
  }
}

std::vector<std::string> normalizer_names() { return runtime::normalizerNames(); }

} // namespace attn

TORCH_LIBRARY_FRAGMENT(attn, m) {
  // Blocks until the JIT's background (optimized-tier) compiles are done (attn::wait_for_compiles).
  m.def("wait_for_compiles() -> ()", [] { attn::wait_for_compiles(); });
}
