#include "models/Attention.h"

#include "frontend/torch/Attention.h"
#include "frontend/torch/ReparamAttention.h"
#include "models/Autocast.h"
#include "models/PositionEncoding.h"
#include "models/ReferenceAttention.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

namespace attn::models {

AttentionOptions::AttentionOptions(int64_t embed_dim, int64_t num_heads)
    : embed_dim_(embed_dim), num_heads_(num_heads) {}

AttentionImpl::AttentionImpl(AttentionOptions options_) : options(std::move(options_)) { reset(); }

namespace {

int64_t kvHeadsOf(const AttentionOptions &options) {
  return options.num_kv_heads() > 0 ? options.num_kv_heads() : options.num_heads();
}

int64_t headDimOf(const AttentionOptions &options) {
  return options.head_dim() > 0 ? options.head_dim() : options.embed_dim() / options.num_heads();
}

ReferenceAttentionSpec referenceSpecOf(const AttentionOptions &options) {
  ReferenceAttentionSpec spec;
  spec.normalizer = parse_normalizer(options.normalizer());
  spec.scale = options.scale();
  spec.causal = options.causal();
  spec.window = options.window();
  spec.alibi = options.alibi();
  return spec;
}

/// ATTN_MODELS_PER_LENGTH_CALLS=1 (read once): the compiled backend's key-padding path makes the
/// per-length calls it made before kv_lengths (one call per group of samples sharing a length, on
/// exactly their keys) instead of one call — for measuring the two against each other only
/// (bench/results/asr-ragged-*.md); the results are the same.
bool perLengthCalls() {
  static const bool enabled = [] {
    const char *value = std::getenv("ATTN_MODELS_PER_LENGTH_CALLS");
    return value && std::strcmp(value, "1") == 0;
  }();
  return enabled;
}

} // namespace

void AttentionImpl::reset() {
  const int64_t embed = options.embed_dim(), heads = options.num_heads();
  TORCH_CHECK(embed > 0 && heads > 0, "Attention: embed_dim and num_heads must be positive, got ",
              embed, " and ", heads);
  TORCH_CHECK(options.head_dim() > 0 || embed % heads == 0, "Attention: embed_dim ", embed,
              " is not divisible by num_heads ", heads, "; set head_dim explicitly");
  const int64_t kvHeads = kvHeadsOf(options), headDim = headDimOf(options);
  TORCH_CHECK(kvHeads > 0 && heads % kvHeads == 0, "Attention: num_heads ", heads,
              " must be a multiple of num_kv_heads ", kvHeads);
  TORCH_CHECK(!options.rope() || headDim % 2 == 0, "Attention: RoPE needs an even head dim, got ",
              headDim);
  TORCH_CHECK(!options.scale() || *options.scale() > 0, "Attention: scale must be positive");
  variant_ = attention_variant(options.normalizer(), headDim, heads, options.window(),
                               options.alibi());
  const NormalizerSpec::Kind kind = parse_normalizer(options.normalizer()).kind;
  const bool compiledOnly = kind == NormalizerSpec::Kind::Ir || kind == NormalizerSpec::Kind::Named;
  TORCH_CHECK(!compiledOnly || options.backend() == AttentionBackend::Compiled,
              "Attention: the Reference backend evaluates softmax, sigmoid and relu only, not '",
              options.normalizer().substr(0, 80), "'");
  TORCH_CHECK(!compiledOnly || !options.record_entropy(),
              "Attention: record_entropy needs a built-in normalizer (softmax, sigmoid, relu); "
              "the entropy reference cannot evaluate '", options.normalizer().substr(0, 80), "'");

  auto projection = [&](int64_t in, int64_t out, bool bias) {
    return Projection(ProjectionOptions(in, out).bias(bias).sigma_reparam(options.sigma_reparam()));
  };
  qkv = query = key = value = nullptr;
  if (options.fused_qkv()) {
    qkv = register_module("qkv", projection(embed, (heads + 2 * kvHeads) * headDim,
                                            options.qkv_bias()));
  } else {
    query = register_module("query", projection(embed, heads * headDim, options.qkv_bias()));
    key = register_module("key", projection(embed, kvHeads * headDim, options.qkv_bias()));
    value = register_module("value", projection(embed, kvHeads * headDim, options.qkv_bias()));
  }
  output = register_module("output", projection(heads * headDim, embed, true));
  query_norm = key_norm = nullptr;
  if (options.qk_norm()) {
    query_norm = register_module(
        "query_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({headDim}).eps(1e-6)));
    key_norm = register_module(
        "key_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({headDim}).eps(1e-6)));
  }
  last_entropy_ = torch::Tensor();
}

torch::Tensor AttentionImpl::forward(const torch::Tensor &x, const torch::Tensor &key_lengths) {
  const int64_t embed = options.embed_dim(), heads = options.num_heads();
  const int64_t kvHeads = kvHeadsOf(options), headDim = headDimOf(options);
  TORCH_CHECK(x.dim() == 3 && x.size(2) == embed, "Attention: x must be [B, S, ", embed,
              "], got shape ", x.sizes());
  const int64_t batch = x.size(0), length = x.size(1);

  // A σReparam fused QKV projection straight into the attention, on the CPU in float32: one
  // compiled block (attn::reparam_qkv_attention) that reads q, k, v in place in the
  // projection's buffer and writes their gradients into one buffer for the σReparam backward.
  // Its output's transpose(1, 2) is contiguous, so merging the heads is a view.
  const bool fullKeys = !key_lengths.defined() ||
                        (key_lengths.dim() == 1 && key_lengths.size(0) == batch &&
                         !at::isFloatingType(key_lengths.scalar_type()) &&
                         (key_lengths.to(torch::kCPU) == length).all().item<bool>());
  if (qkv && qkv->is_sigma_reparam() && !query_norm && !options.rope() && fullKeys &&
      options.backend() == AttentionBackend::Compiled && !options.record_entropy() &&
      x.device().is_cpu() && x.scalar_type() == torch::kFloat &&
      qkv->reparam->weight.scalar_type() == torch::kFloat && batch * length > 0 &&
      !autocastDtype(x.device())) {
    SigmaReparamLinearImpl &projection = *qkv->reparam;
    const torch::Tensor attended = attn::reparam_qkv_attention(
        x, projection.weight,
        projection.bias.defined() ? c10::optional<torch::Tensor>(projection.bias) : c10::nullopt,
        projection.gamma, projection.u, projection.is_training(), heads, kvHeads, variant_,
        options.scale(), options.causal());
    return output->forward(attended.transpose(1, 2).reshape({batch, length, heads * headDim}));
  }

  // [B, S, H·D] → [B, H, S, D]
  auto splitHeads = [&](const torch::Tensor &t, int64_t count) {
    return t.view({batch, length, count, headDim}).transpose(1, 2);
  };
  torch::Tensor q, k, v;
  if (qkv) {
    const std::vector<torch::Tensor> parts =
        qkv->forward(x).split_with_sizes({heads * headDim, kvHeads * headDim, kvHeads * headDim}, -1);
    q = splitHeads(parts[0], heads);
    k = splitHeads(parts[1], kvHeads);
    v = splitHeads(parts[2], kvHeads);
  } else {
    q = splitHeads(query->forward(x), heads);
    k = splitHeads(key->forward(x), kvHeads);
    v = splitHeads(value->forward(x), kvHeads);
  }
  if (query_norm) {
    q = query_norm->forward(q);
    k = key_norm->forward(k);
  }
  if (options.rope()) {
    q = apply_rotary_embedding(q, options.rope_base());
    k = apply_rotary_embedding(k, options.rope_base());
  }

  const ReferenceAttentionSpec referenceSpec = referenceSpecOf(options);
  torch::Tensor entropySum;
  auto core = [&](const torch::Tensor &qs, const torch::Tensor &ks, const torch::Tensor &vs,
                  const torch::Tensor &lengths = {}) {
    if (options.record_entropy()) {
      torch::NoGradGuard noGrad;
      const torch::Tensor sum =
          attention_entropy_sum(reference_attention_probabilities(qs, ks, referenceSpec));
      entropySum = entropySum.defined() ? entropySum + sum : sum;
    }
    if (options.backend() == AttentionBackend::Reference)
      return reference_attention(qs, ks, vs, referenceSpec);
    attn::AttentionOptions opOptions;
    opOptions.variant = variant_;
    if (options.scale())
      opOptions.scale = *options.scale();
    opOptions.causal = options.causal();
    if (lengths.defined())
      opOptions.kvLengths = lengths;
    if (const auto lower = autocastDtype(qs.device())) {
      // Under autocast the op is a product like SDPA: q, k, v in the lower precision (one dtype
      // even where QK-norm left q and k in float32), the op itself free of autocast's casts.
      AutocastExcluded excluded;
      return attn::attention(qs.to(*lower), ks.to(*lower), vs.to(*lower), opOptions);
    }
    return attn::attention(qs, ks, vs, opOptions);
  };

  torch::Tensor attended;
  if (!key_lengths.defined()) {
    attended = core(q, k, v);
  } else {
    TORCH_CHECK(key_lengths.dim() == 1 && key_lengths.size(0) == batch &&
                    !at::isFloatingType(key_lengths.scalar_type()),
                "Attention: key_lengths must be an integer tensor [", batch, "], got ",
                key_lengths.scalar_type(), " ", key_lengths.sizes());
    const torch::Tensor lengths = key_lengths.to(torch::kCPU, torch::kLong).contiguous();
    const int64_t *lengthData = lengths.data_ptr<int64_t>();
    // Samples sharing a length run in one call on exactly their keys.
    std::map<int64_t, std::vector<int64_t>> groups;
    for (int64_t sample = 0; sample < batch; ++sample) {
      TORCH_CHECK(lengthData[sample] >= 0 && lengthData[sample] <= length,
                  "Attention: key_lengths[", sample, "] = ", lengthData[sample],
                  " is outside [0, ", length, "]");
      groups[lengthData[sample]].push_back(sample);
    }
    if (groups.size() == 1 && groups.begin()->first == length) {
      attended = core(q, k, v);
    } else if (options.backend() == AttentionBackend::Compiled && !options.record_entropy() &&
               !perLengthCalls()) {
      // One call for the whole ragged batch: the op's kv_lengths.
      attended = core(q, k, v, key_lengths.to(x.device()));
    } else {
      // The reference backend and the entropy diagnostic see only the keys they are given (and
      // ATTN_MODELS_PER_LENGTH_CALLS=1 restores this path for the compiled backend).
      std::vector<torch::Tensor> outputs, order;
      for (const auto &[keys, samples] : groups) {
        const torch::Tensor index =
            torch::tensor(samples, torch::TensorOptions().dtype(torch::kLong)).to(x.device());
        outputs.push_back(core(q.index_select(0, index),
                               k.index_select(0, index).narrow(2, 0, keys),
                               v.index_select(0, index).narrow(2, 0, keys)));
        order.push_back(index);
      }
      attended = torch::cat(outputs, 0).index_select(0, torch::cat(order).argsort());
    }
  }
  if (options.record_entropy())
    last_entropy_ = (entropySum / static_cast<double>(batch * length)).to(torch::kFloat);

  return output->forward(attended.transpose(1, 2).reshape({batch, length, heads * headDim}));
}

void AttentionImpl::pretty_print(std::ostream &stream) const {
  stream << "attn::models::Attention(embed_dim=" << options.embed_dim()
         << ", num_heads=" << options.num_heads() << ", num_kv_heads=" << kvHeadsOf(options)
         << ", head_dim=" << headDimOf(options) << ", normalizer="
         << (options.normalizer().rfind("mlir:", 0) == 0 ? "<IR>" : options.normalizer())
         << ", qk_norm=" << std::boolalpha << options.qk_norm() << ", rope=" << options.rope()
         << ", alibi=" << options.alibi() << ", causal=" << options.causal()
         << ", window=" << options.window() << ", backend="
         << (options.backend() == AttentionBackend::Compiled ? "compiled" : "reference") << ")";
}

} // namespace attn::models
