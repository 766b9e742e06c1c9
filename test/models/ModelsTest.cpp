// VisionTransformer, SpeechTransformer, the log-mel front-end, the CTC vocabulary and
// checkpoints: forward/backward with every normalizer, compiled vs reference, save → load.
#include "models/Checkpoint.h"
#include "models/SpeechTransformer.h"
#include "models/VisionTransformer.h"
#include "test/models/TestSupport.h"

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <unistd.h>

namespace attn::test {
namespace {

using namespace attn::models;

/// A user normalizer as IR: an attenuated sigmoid (examples/custom.mlir) on head dim 8.
const char *kIrNormalizer = R"(mlir:func.func @f(%q: tensor<?x?x?x8xf32>, %k: tensor<?x?x?x8xf32>,
             %v: tensor<?x?x?x8xf32>) -> tensor<?x?x?x8xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.custom)
      : tensor<?x?x?x8xf32>, tensor<?x?x?x8xf32>, tensor<?x?x?x8xf32> -> tensor<?x?x?x8xf32>
  normalizer_body {
  ^bb0(%s: f32):
    %half = arith.constant 0.5 : f32
    %one = arith.constant 1.0 : f32
    %t = math.tanh %s : f32
    %t1 = arith.addf %t, %one : f32
    %p = arith.mulf %t1, %half : f32
    attn.yield %p : f32
  }
  return %o : tensor<?x?x?x8xf32>
})";

const std::vector<std::string> kNormalizers = {"softmax", "sigmoid", "relu", kIrNormalizer};

/// 8×8 single-channel images, patch 4: 4 patches of width 16, 2 heads of dim 8.
VisionTransformerOptions tinyVit(const std::string &normalizer) {
  VisionTransformerOptions options(5);
  options.image_size(8).patch_size(4).in_channels(1).embed_dim(16).depth(2).num_heads(2);
  options.attention().normalizer(normalizer);
  return options;
}

SpeechTransformerOptions tinySpeech(const std::string &normalizer) {
  SpeechTransformerOptions options;
  options.front_end().n_mels(16);
  options.subsampling_channels(4).embed_dim(16).depth(1).num_heads(2);
  options.attention().normalizer(normalizer);
  return options;
}

std::string temporaryPath(const std::string &name) {
  return "/tmp/attn-models-test-" + std::to_string(::getpid()) + "-" + name + ".pt";
}

TEST(VisionTransformer, ForwardBackwardWithEveryNormalizer) {
  for (const std::string &normalizer : kNormalizers) {
    torch::manual_seed(21);
    VisionTransformer model(tinyVit(normalizer));
    const torch::Tensor images = torch::randn({3, 1, 8, 8});
    const torch::Tensor logits = model->forward(images);
    ASSERT_EQ(logits.sizes(), torch::IntArrayRef({3, 5}));
    EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
    torch::nn::functional::cross_entropy(logits, torch::tensor({0, 3, 4})).backward();
    EXPECT_GT(expectFiniteGradients(*model), 20) << normalizer;
    EXPECT_GT(model->class_token.grad().abs().sum().item<double>(), 0.0) << normalizer;
  }
}

TEST(VisionTransformer, SigmoidModelSameThroughCompiledAndReferenceAttention) {
  torch::manual_seed(22);
  VisionTransformerOptions options = tinyVit("sigmoid");
  options.attention().qk_norm(true);
  options.norm(BlockNorm::HybridNorm).layer_scale_init(0.1).sigma_reparam(true);
  VisionTransformer compiled(options);
  options.attention().backend(AttentionBackend::Reference);
  VisionTransformer reference(options);
  compiled->to(torch::kDouble);
  reference->to(torch::kDouble);
  copyState(*compiled, *reference);
  compiled->eval();
  reference->eval();

  const torch::Tensor images = torch::randn({2, 1, 8, 8}, torch::kDouble);
  const torch::Tensor logitsCompiled = compiled->forward(images);
  const torch::Tensor logitsReference = reference->forward(images);
  EXPECT_LT(relativeError(logitsCompiled, logitsReference), 1e-5);
  logitsCompiled.pow(2).sum().backward();
  logitsReference.pow(2).sum().backward();
  const auto gradsCompiled = takeGradients(*compiled), gradsReference = takeGradients(*reference);
  for (const auto &[name, grad] : gradsReference)
    EXPECT_LT(relativeError(gradsCompiled.at(name), grad), 1e-4) << name;
}

TEST(VisionTransformer, PresetsMeanPoolingAndPositionFreeFeatures) {
  const VisionTransformerOptions base = VisionTransformerOptions::base(1000);
  EXPECT_EQ(base.embed_dim(), 768);
  EXPECT_EQ(base.depth(), 12);
  EXPECT_EQ(base.num_heads(), 12);
  EXPECT_EQ(base.patch_size(), 16);
  EXPECT_EQ(VisionTransformerOptions::tiny().embed_dim(), 192);
  EXPECT_EQ(VisionTransformerOptions::small().num_heads(), 6);

  VisionTransformerOptions options = tinyVit("softmax");
  options.pooling(Pooling::Mean).position_embedding(false);
  options.attention().rope(true);
  VisionTransformer model(options);
  EXPECT_FALSE(model->class_token.defined());
  EXPECT_FALSE(model->position_embedding.defined());
  // Without position embeddings any multiple of the patch size works.
  const torch::Tensor features = model->features(torch::randn({2, 1, 12, 8}));
  EXPECT_EQ(features.sizes(), torch::IntArrayRef({2, 6, 16}));
  EXPECT_EQ(model->forward(torch::randn({2, 1, 8, 8})).sizes(), torch::IntArrayRef({2, 5}));
  EXPECT_THROW(VisionTransformer(tinyVit("softmax"))->forward(torch::randn({1, 1, 12, 8})),
               c10::Error);
}

TEST(VisionTransformer, SigmaReparamUpdatesOnlyInTrainingAndRecordsEntropy) {
  torch::manual_seed(23);
  VisionTransformerOptions options = tinyVit("softmax");
  options.sigma_reparam(true);
  options.attention().record_entropy(true);
  VisionTransformer model(options);
  const torch::Tensor images = torch::randn({2, 1, 8, 8});
  const torch::Tensor u = model->head->reparam->u.clone();
  const torch::Tensor patchU = model->patch_embedding->reparam->u.clone();
  {
    torch::NoGradGuard noGrad; // move the weights so that u is no longer a fixed point
    model->head->reparam->weight.add_(torch::randn_like(model->head->reparam->weight));
    model->patch_embedding->reparam->weight.add_(
        torch::randn_like(model->patch_embedding->reparam->weight));
  }
  model->eval();
  model->forward(images);
  EXPECT_TRUE(torch::equal(u, model->head->reparam->u));
  model->train();
  model->forward(images);
  EXPECT_FALSE(torch::equal(u, model->head->reparam->u));
  EXPECT_FALSE(torch::equal(patchU, model->patch_embedding->reparam->u));

  const torch::Tensor entropy = model->attention_entropy();
  ASSERT_EQ(entropy.sizes(), torch::IntArrayRef({2, 2}));
  // Softmax over 5 tokens: entropy in (0, ln 5].
  EXPECT_TRUE((entropy > 0).all().item<bool>());
  EXPECT_TRUE((entropy <= std::log(5.0) + 1e-5).all().item<bool>());
}

TEST(VisionTransformer, ConvertToSigmaReparamKeepsOutputs) {
  torch::manual_seed(24);
  VisionTransformer model(tinyVit("sigmoid"));
  model->eval();
  const torch::Tensor images = torch::randn({2, 1, 8, 8});
  const torch::Tensor before = model->forward(images);
  // Per block: qkv, output, fc1, fc2; plus the head and the patch embedding.
  EXPECT_EQ(convert_to_sigma_reparam(*model), 2 * 4 + 2);
  EXPECT_TRUE(model->patch_embedding->is_sigma_reparam());
  EXPECT_LT(relativeError(model->forward(images), before), 1e-5);
}

TEST(VisionTransformer, CloneIsDeepAndIdentical) {
  torch::manual_seed(27);
  VisionTransformer model(tinyVit("relu"));
  convert_to_sigma_reparam(*model);
  model->eval();
  auto copy = std::dynamic_pointer_cast<VisionTransformerImpl>(model->clone());
  ASSERT_TRUE(copy);
  copy->eval();
  const torch::Tensor images = torch::randn({2, 1, 8, 8});
  EXPECT_TRUE(torch::equal(copy->forward(images), model->forward(images)));
  {
    torch::NoGradGuard noGrad;
    copy->head->reparam->gamma.mul_(2.0);
  }
  EXPECT_FALSE(torch::equal(copy->forward(images), model->forward(images))) << "shares storage";
}

TEST(TransformerBlock, ComputesPreNormAndHybridNormWithLayerScale) {
  for (BlockNorm norm : {BlockNorm::PreNorm, BlockNorm::HybridNorm}) {
    torch::manual_seed(29);
    TransformerBlock block(TransformerBlockOptions(AttentionOptions(16, 2).normalizer("sigmoid"))
                               .norm(norm)
                               .layer_scale_init(0.3)
                               .mlp_ratio(2.0));
    {
      torch::NoGradGuard noGrad; // distinct per-channel scales
      block->attention_scale->scale.uniform_(0.1, 1.0);
      block->mlp_scale->scale.uniform_(0.1, 1.0);
    }
    EXPECT_EQ(block->mlp->fc1->options.out_features(), 32);
    const torch::Tensor x = torch::randn({2, 5, 16});
    torch::Tensor branch = block->attention->forward(block->attention_norm->forward(x));
    if (norm == BlockNorm::HybridNorm)
      branch = block->attention_output_norm->forward(branch);
    const torch::Tensor hidden = x + branch * block->attention_scale->scale;
    const torch::Tensor expected =
        hidden + block->mlp->forward(block->mlp_norm->forward(hidden)) * block->mlp_scale->scale;
    EXPECT_LT(relativeError(block->forward(x), expected), 1e-6);
    EXPECT_EQ(block->attention_output_norm.is_empty(), norm == BlockNorm::PreNorm);
  }
}

TEST(TransformerBlock, WorksInsideSequentialWithDefaultKeyLengths) {
  torch::manual_seed(28);
  torch::nn::Sequential stack(
      TransformerBlock(TransformerBlockOptions(AttentionOptions(16, 2).normalizer("sigmoid"))),
      TransformerBlock(TransformerBlockOptions(AttentionOptions(16, 4).rope(true))
                           .norm(BlockNorm::HybridNorm)
                           .layer_scale_init(1e-2)));
  const torch::Tensor x = torch::randn({2, 6, 16}, torch::requires_grad());
  const torch::Tensor y = stack->forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  y.sum().backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_GT(expectFiniteGradients(*stack), 10);
}

TEST(Checkpoint, VisionTransformerRoundTripFromTheFileAlone) {
  torch::manual_seed(25);
  VisionTransformerOptions options = tinyVit("sigmoid(bias=-2)");
  options.sigma_reparam(true).norm(BlockNorm::HybridNorm).layer_scale_init(0.5);
  options.attention().alibi(true).num_kv_heads(1).causal(true);
  VisionTransformer model(options);
  const torch::Tensor images = torch::randn({2, 1, 8, 8});
  model->train();
  for (int step = 0; step < 2; ++step)
    model->forward(images).sum().backward(); // moves u away from its initial value
  model->eval();
  const torch::Tensor expected = model->forward(images);

  const std::string path = temporaryPath("vit");
  save_checkpoint(model, path, {{"epoch", "3"}, {"recipe", "unit test"}});
  EXPECT_EQ(checkpoint_kind(path), "vision_transformer");
  CheckpointMeta meta;
  VisionTransformer loaded = load_vision_transformer(path, &meta);
  loaded->eval();
  EXPECT_EQ(meta.at("epoch"), "3");
  EXPECT_EQ(meta.at("recipe"), "unit test");
  EXPECT_TRUE(torch::equal(loaded->forward(images), expected));
  EXPECT_TRUE(torch::equal(loaded->head->reparam->u, model->head->reparam->u));
  EXPECT_TRUE(loaded->options.attention().alibi());
  EXPECT_THROW(load_speech_transformer(path), c10::Error);
  std::remove(path.c_str());
}

TEST(Checkpoint, Float64ModelLoadsConvertedNotReinterpreted) {
  // A --dtype=float64 run's model.pt: the loader builds a float32 model and must convert the
  // stored values (Module::load's set_ used to reinterpret the bytes: 1e38 and NaN).
  torch::manual_seed(26);
  VisionTransformer model(tinyVit("softmax"));
  model->to(torch::kFloat64);
  const std::string path = temporaryPath("vit64");
  save_checkpoint(model, path, {});
  VisionTransformer loaded = load_vision_transformer(path);
  auto stored = model->named_parameters();
  for (const auto &item : loaded->named_parameters()) {
    EXPECT_EQ(item.value().scalar_type(), torch::kFloat32) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), stored[item.key()].to(torch::kFloat32))) << item.key();
  }
  std::remove(path.c_str());
}

TEST(Checkpoint, ConvertedModelWithIrNormalizerRoundTrips) {
  torch::manual_seed(26);
  VisionTransformer model(tinyVit(kIrNormalizer));
  convert_to_sigma_reparam(*model);
  model->eval();
  const torch::Tensor images = torch::randn({1, 1, 8, 8});
  const std::string path = temporaryPath("vit-converted");
  save_checkpoint(model, path);
  VisionTransformer loaded = load_vision_transformer(path);
  loaded->eval();
  EXPECT_EQ(loaded->options.attention().normalizer(), kIrNormalizer);
  EXPECT_TRUE(loaded->head->is_sigma_reparam());
  EXPECT_TRUE(torch::equal(loaded->forward(images), model->forward(images)));

  // Into an existing module of the same structure.
  VisionTransformer target(tinyVit(kIrNormalizer));
  convert_to_sigma_reparam(*target);
  load_checkpoint(*target, path);
  target->eval();
  EXPECT_TRUE(torch::equal(target->forward(images), model->forward(images)));
  std::remove(path.c_str());
}

// ----- speech ----------------------------------------------------------------------------------

struct Utterances {
  torch::Tensor waveforms, lengths;
};

Utterances randomUtterances() {
  const std::vector<int64_t> lengths = {3200, 1900, 2600};
  torch::Tensor waveforms = torch::zeros({3, 3200});
  for (int64_t i = 0; i < 3; ++i)
    waveforms[i].narrow(0, 0, lengths[i]).copy_(torch::randn({lengths[i]}) * 0.1);
  return {waveforms, torch::tensor(lengths, torch::kLong)};
}

TEST(SpeechTransformer, ForwardBackwardCtcWithEveryNormalizer) {
  const Utterances batch = randomUtterances();
  for (const std::string &normalizer : kNormalizers) {
    torch::manual_seed(31);
    SpeechTransformer model(tinySpeech(normalizer));
    const SpeechOutput output = model->forward(batch.waveforms, batch.lengths);
    // 1 + n / 160 frames, then two (n − 3) / 2 + 1 steps: 21 → 10 → 4, 12 → 5 → 2, 17 → 8 → 3.
    EXPECT_TRUE(torch::equal(output.output_lengths, torch::tensor({4, 2, 3}, torch::kLong)));
    ASSERT_EQ(output.log_probs.sizes(), torch::IntArrayRef({4, 3, CharacterVocabulary::kSize}));
    EXPECT_LT((output.log_probs.logsumexp(-1)).abs().max().item<double>(), 1e-5);
    const torch::Tensor targets = torch::cat({CharacterVocabulary::encode("ab"),
                                              CharacterVocabulary::encode("c"),
                                              CharacterVocabulary::encode("d e")});
    const torch::Tensor loss = torch::nn::functional::ctc_loss(
        output.log_probs, targets, output.output_lengths, torch::tensor({2, 1, 3}, torch::kLong));
    ASSERT_TRUE(std::isfinite(loss.item<double>())) << normalizer;
    loss.backward();
    EXPECT_GT(expectFiniteGradients(*model), 15) << normalizer;
  }
}

TEST(SpeechTransformer, PaddingDoesNotChangeAnUtterance) {
  torch::manual_seed(32);
  SpeechTransformerOptions options = tinySpeech("sigmoid");
  options.attention().rope(true);
  SpeechTransformer model(options);
  const Utterances batch = randomUtterances();
  const SpeechOutput padded = model->forward(batch.waveforms, batch.lengths);
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t samples = batch.lengths[i].item<int64_t>();
    const SpeechOutput alone = model->forward(batch.waveforms.slice(0, i, i + 1).narrow(1, 0, samples),
                                              batch.lengths.slice(0, i, i + 1));
    const int64_t frames = alone.output_lengths[0].item<int64_t>();
    EXPECT_EQ(frames, padded.output_lengths[i].item<int64_t>());
    EXPECT_LT(relativeError(padded.log_probs.slice(1, i, i + 1).narrow(0, 0, frames),
                            alone.log_probs),
              1e-5)
        << "utterance " << i;
  }
}

TEST(SpeechTransformer, CheckpointRoundTrip) {
  torch::manual_seed(33);
  SpeechTransformerOptions options = tinySpeech("relu");
  options.sigma_reparam(true);
  options.front_end().hop_length(128);
  SpeechTransformer model(options);
  model->eval();
  const Utterances batch = randomUtterances();
  const std::string path = temporaryPath("speech");
  save_checkpoint(model, path, {{"step", "10"}});
  SpeechTransformer loaded = load_speech_transformer(path);
  loaded->eval();
  EXPECT_EQ(loaded->options.front_end().hop_length(), 128);
  EXPECT_TRUE(torch::equal(loaded->forward(batch.waveforms, batch.lengths).log_probs,
                           model->forward(batch.waveforms, batch.lengths).log_probs));
  std::remove(path.c_str());
}

TEST(LogMel, FilterbankAndPureTone) {
  const torch::Tensor bank = mel_filterbank(16000, 400, 40, 0.0, 8000.0);
  ASSERT_EQ(bank.sizes(), torch::IntArrayRef({40, 201}));
  EXPECT_GE(bank.min().item<double>(), 0.0);
  EXPECT_LE(bank.max().item<double>(), 1.0 + 1e-6);
  EXPECT_TRUE((bank.sum(1) > 0).all().item<bool>()) << "every filter covers some bin";

  // A 1 kHz tone peaks in the filter whose centre is nearest 1 kHz.
  LogMel frontEnd(LogMelOptions().n_mels(40).normalize(false));
  const torch::Tensor time = torch::arange(16000, torch::kFloat) / 16000.0;
  const torch::Tensor tone = torch::sin(2 * M_PI * 1000.0 * time).unsqueeze(0);
  const LogMelOutput features = frontEnd->forward(tone, torch::tensor({16000}, torch::kLong));
  EXPECT_EQ(features.frame_lengths.item<int64_t>(), 101);
  const int64_t peak = features.features[0].mean(0).argmax().item<int64_t>();
  const double melOf1k = 2595.0 * std::log10(1.0 + 1000.0 / 700.0);
  const double spacing = 2595.0 * std::log10(1.0 + 8000.0 / 700.0) / 41.0;
  EXPECT_NEAR(static_cast<double>(peak), melOf1k / spacing - 1.0, 1.0);
}

TEST(CharacterVocabulary, EncodeDecodeGreedy) {
  EXPECT_TRUE(torch::equal(CharacterVocabulary::encode("Ab c'!"),
                           torch::tensor({3, 4, 1, 5, 2}, torch::kLong)));
  EXPECT_EQ(CharacterVocabulary::decode({3, 4, 1, 5, 2}), "ab c'");
  // Frames: a a blank a b b → "aab".
  const std::vector<int64_t> best = {3, 3, 0, 3, 4, 4};
  torch::Tensor logProbs = torch::full({6, 1, CharacterVocabulary::kSize}, -10.0);
  for (size_t t = 0; t < best.size(); ++t)
    logProbs[t][0][best[t]] = 0.0;
  EXPECT_EQ(CharacterVocabulary::greedy_decode(logProbs, torch::tensor({6}, torch::kLong))[0], "aab");
  EXPECT_EQ(CharacterVocabulary::greedy_decode(logProbs, torch::tensor({2}, torch::kLong))[0], "a");
}

} // namespace
} // namespace attn::test
