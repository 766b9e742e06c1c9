#include "models/Checkpoint.h"

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <iomanip>
#include <sstream>

namespace attn::models {
namespace {

using Config = std::map<std::string, std::string>;
constexpr int64_t kCheckpointVersion = 1;

// ----- option values ↔ text ----------------------------------------------------------------------

std::string text(int64_t value) { return std::to_string(value); }
std::string text(bool value) { return value ? "true" : "false"; }
std::string text(double value) {
  std::ostringstream stream;
  stream << std::setprecision(17) << value;
  return stream.str();
}

/// Reads config[key]; absent keys keep the default, so older checkpoints stay loadable.
class ConfigReader {
public:
  explicit ConfigReader(const Config &config) : config_(config) {}

  const std::string *find(const std::string &key) const {
    const auto found = config_.find(key);
    return found == config_.end() ? nullptr : &found->second;
  }
  int64_t integer(const std::string &key, int64_t fallback) const {
    const std::string *value = find(key);
    return value ? parse<int64_t>(key, *value, [](const std::string &s) { return std::stoll(s); })
                 : fallback;
  }
  double real(const std::string &key, double fallback) const {
    const std::string *value = find(key);
    return value ? parse<double>(key, *value, [](const std::string &s) { return std::stod(s); })
                 : fallback;
  }
  bool boolean(const std::string &key, bool fallback) const {
    const std::string *value = find(key);
    if (!value)
      return fallback;
    TORCH_CHECK(*value == "true" || *value == "false", "checkpoint config '", key,
                "' must be true or false, got '", *value, "'");
    return *value == "true";
  }
  std::string string(const std::string &key, const std::string &fallback) const {
    const std::string *value = find(key);
    return value ? *value : fallback;
  }

private:
  template <typename T, typename Parse>
  static T parse(const std::string &key, const std::string &value, Parse parseText) {
    try {
      return parseText(value);
    } catch (const std::exception &) {
      TORCH_CHECK(false, "checkpoint config '", key, "' is not a number: '", value, "'");
    }
  }
  const Config &config_;
};

std::string normText(BlockNorm norm) { return norm == BlockNorm::PreNorm ? "pre" : "hybrid"; }
BlockNorm parseNorm(const std::string &value) {
  TORCH_CHECK(value == "pre" || value == "hybrid", "checkpoint config 'norm' must be pre or "
                                                   "hybrid, got '", value, "'");
  return value == "pre" ? BlockNorm::PreNorm : BlockNorm::HybridNorm;
}

void writeAttention(const AttentionOptions &options, Config &config) {
  const std::string p = "attention.";
  config[p + "num_kv_heads"] = text(options.num_kv_heads());
  config[p + "head_dim"] = text(options.head_dim());
  config[p + "normalizer"] = options.normalizer();
  config[p + "scale"] = options.scale() ? text(*options.scale()) : "";
  config[p + "qk_norm"] = text(options.qk_norm());
  config[p + "rope"] = text(options.rope());
  config[p + "rope_base"] = text(options.rope_base());
  config[p + "alibi"] = text(options.alibi());
  config[p + "causal"] = text(options.causal());
  config[p + "window"] = text(options.window());
  config[p + "fused_qkv"] = text(options.fused_qkv());
  config[p + "qkv_bias"] = text(options.qkv_bias());
  config[p + "sigma_reparam"] = text(options.sigma_reparam());
  config[p + "backend"] =
      options.backend() == AttentionBackend::Compiled ? "compiled" : "reference";
  config[p + "record_entropy"] = text(options.record_entropy());
}

AttentionOptions readAttention(const ConfigReader &reader) {
  const std::string p = "attention.";
  AttentionOptions options;
  options.num_kv_heads(reader.integer(p + "num_kv_heads", options.num_kv_heads()))
      .head_dim(reader.integer(p + "head_dim", options.head_dim()))
      .normalizer(reader.string(p + "normalizer", options.normalizer()))
      .qk_norm(reader.boolean(p + "qk_norm", options.qk_norm()))
      .rope(reader.boolean(p + "rope", options.rope()))
      .rope_base(reader.real(p + "rope_base", options.rope_base()))
      .alibi(reader.boolean(p + "alibi", options.alibi()))
      .causal(reader.boolean(p + "causal", options.causal()))
      .window(reader.integer(p + "window", options.window()))
      .fused_qkv(reader.boolean(p + "fused_qkv", options.fused_qkv()))
      .qkv_bias(reader.boolean(p + "qkv_bias", options.qkv_bias()))
      .sigma_reparam(reader.boolean(p + "sigma_reparam", options.sigma_reparam()))
      .record_entropy(reader.boolean(p + "record_entropy", options.record_entropy()));
  if (!reader.string(p + "scale", "").empty())
    options.scale(reader.real(p + "scale", 1.0));
  const std::string backend = reader.string(p + "backend", "compiled");
  TORCH_CHECK(backend == "compiled" || backend == "reference",
              "checkpoint config 'attention.backend' must be compiled or reference, got '",
              backend, "'");
  options.backend(backend == "compiled" ? AttentionBackend::Compiled
                                        : AttentionBackend::Reference);
  return options;
}

// ----- archive ---------------------------------------------------------------------------------

c10::Dict<std::string, std::string> toDict(const Config &config) {
  c10::Dict<std::string, std::string> dict;
  for (const auto &[key, value] : config)
    dict.insert(key, value);
  return dict;
}

Config fromDict(const c10::IValue &value) {
  Config config;
  for (const auto &entry : value.toGenericDict())
    config[entry.key().toStringRef()] = entry.value().toStringRef();
  return config;
}

/// True when every convertible layer was swapped after construction although the options do not
/// ask for σReparam: the loader must convert the fresh model before loading the state.
bool convertedAfterConstruction(const torch::nn::Module &module, bool optionsSayReparam) {
  if (optionsSayReparam)
    return false;
  int64_t convertible = 0, reparam = 0;
  for (const auto &child : module.modules(/*include_self=*/false)) {
    if (const auto *layer = dynamic_cast<const SigmaReparamConvertible *>(child.get())) {
      ++convertible;
      reparam += layer->is_sigma_reparam() ? 1 : 0;
    }
  }
  return convertible > 0 && reparam == convertible;
}

void write(const torch::nn::Module &module, const std::string &path, const std::string &kind,
           const Config &config, bool converted, const CheckpointMeta &meta) {
  torch::serialize::OutputArchive archive;
  archive.write("version", c10::IValue(kCheckpointVersion));
  archive.write("kind", c10::IValue(kind));
  archive.write("config", c10::IValue(toDict(config)));
  archive.write("converted_to_sigma_reparam", c10::IValue(converted));
  archive.write("meta", c10::IValue(toDict(meta)));
  torch::serialize::OutputArchive state;
  module.save(state);
  archive.write("model", state);
  archive.save_to(path);
}

struct OpenedCheckpoint {
  torch::serialize::InputArchive archive;
  std::string kind;
  Config config;
  bool converted = false;
};

void open(OpenedCheckpoint &opened, const std::string &path, CheckpointMeta *meta) {
  opened.archive.load_from(path);
  c10::IValue value;
  TORCH_CHECK(opened.archive.try_read("version", value) && value.isInt(), "'", path,
              "' is not an attn::models checkpoint (no version)");
  TORCH_CHECK(value.toInt() <= kCheckpointVersion, "checkpoint '", path, "' has version ",
              value.toInt(), "; this build reads up to ", kCheckpointVersion);
  opened.archive.read("kind", value);
  opened.kind = value.toStringRef();
  opened.archive.read("config", value);
  opened.config = fromDict(value);
  opened.archive.read("converted_to_sigma_reparam", value);
  opened.converted = value.toBool();
  if (meta) {
    opened.archive.read("meta", value);
    *meta = fromDict(value);
  }
}

/// Module::load, but copying each stored tensor into the module's (copy_ converts dtypes)
/// instead of Module::load's set_, which reinterprets a float64 run's tensors as float32 garbage.
void loadInto(torch::nn::Module &module, torch::serialize::InputArchive &archive,
              const std::string &prefix) {
  auto copyStored = [&](torch::Tensor &into, const std::string &name, bool isBuffer) {
    torch::Tensor stored;
    archive.read(name, stored, isBuffer);
    TORCH_CHECK(stored.sizes() == into.sizes(), "checkpoint: '", prefix, name, "' has shape ",
                stored.sizes(), ", the model expects ", into.sizes());
    into.copy_(stored);
  };
  for (auto &item : module.named_parameters(/*recurse=*/false))
    copyStored(item.value(), item.key(), false);
  for (auto &item : module.named_buffers(/*recurse=*/false))
    copyStored(item.value(), item.key(), true);
  for (const auto &child : module.named_children()) {
    torch::serialize::InputArchive childArchive;
    archive.read(child.key(), childArchive);
    loadInto(*child.value(), childArchive, prefix + child.key() + ".");
  }
}

void loadState(torch::nn::Module &module, torch::serialize::InputArchive &archive) {
  torch::serialize::InputArchive state;
  archive.read("model", state);
  torch::NoGradGuard noGrad;
  loadInto(module, state, "");
}

} // namespace

// ----- options ↔ config ------------------------------------------------------------------------

std::map<std::string, std::string> to_config(const VisionTransformerOptions &options) {
  Config config;
  config["image_size"] = text(options.image_size());
  config["patch_size"] = text(options.patch_size());
  config["in_channels"] = text(options.in_channels());
  config["num_classes"] = text(options.num_classes());
  config["embed_dim"] = text(options.embed_dim());
  config["depth"] = text(options.depth());
  config["num_heads"] = text(options.num_heads());
  config["mlp_ratio"] = text(options.mlp_ratio());
  config["pooling"] = options.pooling() == Pooling::ClassToken ? "class_token" : "mean";
  config["position_embedding"] = text(options.position_embedding());
  config["norm"] = normText(options.norm());
  config["layer_scale_init"] = text(options.layer_scale_init());
  config["sigma_reparam"] = text(options.sigma_reparam());
  writeAttention(options.attention(), config);
  return config;
}

VisionTransformerOptions parse_vision_transformer_config(const Config &config) {
  const ConfigReader reader(config);
  VisionTransformerOptions defaults;
  VisionTransformerOptions options(reader.integer("num_classes", defaults.num_classes()));
  options.image_size(reader.integer("image_size", defaults.image_size()))
      .patch_size(reader.integer("patch_size", defaults.patch_size()))
      .in_channels(reader.integer("in_channels", defaults.in_channels()))
      .embed_dim(reader.integer("embed_dim", defaults.embed_dim()))
      .depth(reader.integer("depth", defaults.depth()))
      .num_heads(reader.integer("num_heads", defaults.num_heads()))
      .mlp_ratio(reader.real("mlp_ratio", defaults.mlp_ratio()))
      .position_embedding(reader.boolean("position_embedding", defaults.position_embedding()))
      .norm(parseNorm(reader.string("norm", "pre")))
      .layer_scale_init(reader.real("layer_scale_init", defaults.layer_scale_init()))
      .sigma_reparam(reader.boolean("sigma_reparam", defaults.sigma_reparam()))
      .attention(readAttention(reader));
  const std::string pooling = reader.string("pooling", "class_token");
  TORCH_CHECK(pooling == "class_token" || pooling == "mean",
              "checkpoint config 'pooling' must be class_token or mean, got '", pooling, "'");
  options.pooling(pooling == "class_token" ? Pooling::ClassToken : Pooling::Mean);
  return options;
}

std::map<std::string, std::string> to_config(const SpeechTransformerOptions &options) {
  Config config;
  const LogMelOptions &frontEnd = options.front_end();
  config["front_end.sample_rate"] = text(frontEnd.sample_rate());
  config["front_end.n_fft"] = text(frontEnd.n_fft());
  config["front_end.hop_length"] = text(frontEnd.hop_length());
  config["front_end.n_mels"] = text(frontEnd.n_mels());
  config["front_end.f_min"] = text(frontEnd.f_min());
  config["front_end.f_max"] = text(frontEnd.f_max());
  config["front_end.normalize"] = text(frontEnd.normalize());
  config["subsampling_channels"] = text(options.subsampling_channels());
  config["vocab_size"] = text(options.vocab_size());
  config["embed_dim"] = text(options.embed_dim());
  config["depth"] = text(options.depth());
  config["num_heads"] = text(options.num_heads());
  config["mlp_ratio"] = text(options.mlp_ratio());
  config["sinusoidal_positions"] = text(options.sinusoidal_positions());
  config["norm"] = normText(options.norm());
  config["layer_scale_init"] = text(options.layer_scale_init());
  config["sigma_reparam"] = text(options.sigma_reparam());
  writeAttention(options.attention(), config);
  return config;
}

SpeechTransformerOptions parse_speech_transformer_config(const Config &config) {
  const ConfigReader reader(config);
  SpeechTransformerOptions defaults;
  LogMelOptions frontEnd;
  frontEnd.sample_rate(reader.integer("front_end.sample_rate", frontEnd.sample_rate()))
      .n_fft(reader.integer("front_end.n_fft", frontEnd.n_fft()))
      .hop_length(reader.integer("front_end.hop_length", frontEnd.hop_length()))
      .n_mels(reader.integer("front_end.n_mels", frontEnd.n_mels()))
      .f_min(reader.real("front_end.f_min", frontEnd.f_min()))
      .f_max(reader.real("front_end.f_max", frontEnd.f_max()))
      .normalize(reader.boolean("front_end.normalize", frontEnd.normalize()));
  SpeechTransformerOptions options(reader.integer("vocab_size", defaults.vocab_size()));
  options.front_end(frontEnd)
      .subsampling_channels(reader.integer("subsampling_channels", defaults.subsampling_channels()))
      .embed_dim(reader.integer("embed_dim", defaults.embed_dim()))
      .depth(reader.integer("depth", defaults.depth()))
      .num_heads(reader.integer("num_heads", defaults.num_heads()))
      .mlp_ratio(reader.real("mlp_ratio", defaults.mlp_ratio()))
      .sinusoidal_positions(reader.boolean("sinusoidal_positions", defaults.sinusoidal_positions()))
      .norm(parseNorm(reader.string("norm", "pre")))
      .layer_scale_init(reader.real("layer_scale_init", defaults.layer_scale_init()))
      .sigma_reparam(reader.boolean("sigma_reparam", defaults.sigma_reparam()))
      .attention(readAttention(reader));
  return options;
}

// ----- save / load -----------------------------------------------------------------------------

void save_checkpoint(const VisionTransformer &model, const std::string &path,
                     const CheckpointMeta &meta) {
  write(*model, path, "vision_transformer", to_config(model->options),
        convertedAfterConstruction(*model, model->options.sigma_reparam()), meta);
}

void save_checkpoint(const SpeechTransformer &model, const std::string &path,
                     const CheckpointMeta &meta) {
  write(*model, path, "speech_transformer", to_config(model->options),
        convertedAfterConstruction(*model, model->options.sigma_reparam()), meta);
}

void save_checkpoint(const torch::nn::Module &module, const std::string &path,
                     const CheckpointMeta &meta) {
  write(module, path, "module", {}, false, meta);
}

std::string checkpoint_kind(const std::string &path) {
  OpenedCheckpoint opened;
  open(opened, path, nullptr);
  return opened.kind;
}

VisionTransformer load_vision_transformer(const std::string &path, CheckpointMeta *meta) {
  OpenedCheckpoint opened;
  open(opened, path, meta);
  TORCH_CHECK(opened.kind == "vision_transformer", "checkpoint '", path, "' holds a ",
              opened.kind, ", not a vision_transformer");
  VisionTransformer model(parse_vision_transformer_config(opened.config));
  if (opened.converted)
    convert_to_sigma_reparam(*model);
  loadState(*model, opened.archive);
  return model;
}

SpeechTransformer load_speech_transformer(const std::string &path, CheckpointMeta *meta) {
  OpenedCheckpoint opened;
  open(opened, path, meta);
  TORCH_CHECK(opened.kind == "speech_transformer", "checkpoint '", path, "' holds a ",
              opened.kind, ", not a speech_transformer");
  SpeechTransformer model(parse_speech_transformer_config(opened.config));
  if (opened.converted)
    convert_to_sigma_reparam(*model);
  loadState(*model, opened.archive);
  return model;
}

void load_checkpoint(torch::nn::Module &module, const std::string &path, CheckpointMeta *meta) {
  OpenedCheckpoint opened;
  open(opened, path, meta);
  loadState(module, opened.archive);
}

} // namespace attn::models
