// attn-train end to end, as a user runs it: every recipe for a few dozen steps on the small
// data sets (its loss must fall), resume equality, 2-process data parallelism against one
// process, the EMA scaling rule as the run applies it, and the CLI's error messages.
#include "models/Checkpoint.h"
#include "test/recipes/AttnTrainRun.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <string>
#include <thread>

namespace {
using namespace attn_train_run;

TEST(RecipeRun, VitSupervisedLossFalls) {
  auto out = freshDir("vit");
  auto r = attnTrain("vit-supervised " + kDigits + "--steps=40 --lr=5e-3 --log-every=5 --out=" + out);
  expectLossFalls(out, r);
  EXPECT_TRUE(fs::exists(out + "/model.pt"));
  EXPECT_TRUE(fs::exists(out + "/metrics.csv"));
  EXPECT_EQ(column(out, "test_accuracy").size(), 1u);
}

TEST(RecipeRun, SigmoidSigmaReparamVitLossFalls) {
  auto out = freshDir("vit-sigmoid");
  auto r = attnTrain("vit-supervised " + kDigits +
                     "--attention=sigmoid --sigma-reparam --steps=40 --lr=5e-3 --log-every=5 --out=" + out);
  expectLossFalls(out, r);
  // The diagnostics the run logs at each evaluation: attention entropy per layer (one layer;
  // 16 patches: at most ln 16) and σReparam's γ/σ.
  auto entropy = column(out, "attention_entropy_l0");
  ASSERT_EQ(entropy.size(), 1u) << r.output;
  EXPECT_GT(entropy[0], 0.0);
  EXPECT_LE(entropy[0], std::log(16.0) + 1e-5);
  auto low = column(out, "sigma_min"), mean = column(out, "sigma_mean"), high = column(out, "sigma_max");
  ASSERT_EQ(high.size(), 1u) << r.output;
  EXPECT_GT(low[0], 0.0);
  EXPECT_LE(low[0], mean[0]);
  EXPECT_LE(mean[0], high[0]);
}

TEST(RecipeRun, UserWrittenIrNormalizerLossFalls) {
  auto out = freshDir("vit-ir");
  auto r = attnTrain("vit-supervised " + kDigits + "--attention=" ATTN_SOURCE_DIR
                     "/models/recipes/configs/softplus-d16.mlir --steps=40 --lr=5e-3 --log-every=5 --out=" + out);
  expectLossFalls(out, r);
}

TEST(RecipeRun, SimclrLossFalls) {
  auto out = freshDir("simclr");
  expectLossFalls(out, attnTrain("simclr " + kDigits + kSsl + "--temperature=0.5 --steps=40 --out=" + out));
  EXPECT_EQ(column(out, "knn_accuracy").size(), 1u);
  // The linear probe on frozen features beside k-NN, for the trained and the untrained encoder.
  auto probe = column(out, "linear_probe_accuracy"), probe0 = column(out, "linear_probe_accuracy_step0");
  ASSERT_EQ(probe.size(), 1u);
  ASSERT_EQ(probe0.size(), 1u);
  EXPECT_GT(probe[0], 0.1);
  EXPECT_LE(probe[0], 1.0);
  // The pretrained backbone, as a ViT checkpoint that fine-tuning and probes can load.
  auto backbone = attn::models::load_vision_transformer(out + "/model.pt");
  EXPECT_GT(backbone->parameters().size(), 0u);
}

TEST(RecipeRun, VitSupervisedStartsFromAnSslBackbone) {
  // --init=OUT/model.pt: the backbone's tensors, the head fresh; a vanishing learning rate keeps
  // the fine-tuned model at the backbone.
  auto ssl = freshDir("init-ssl");
  auto pre = attnTrain("simclr " + kDigits + kSsl + "--temperature=0.5 --steps=5 --probe-steps=0 --out=" + ssl);
  ASSERT_EQ(pre.exitCode, 0) << pre.output;
  auto out = freshDir("init-vit");
  auto r = attnTrain("vit-supervised " + kDigits + "--steps=2 --lr=1e-12 --warmup-steps=0 --init=" + ssl +
                     "/model.pt --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  EXPECT_NE(r.output.find("init: "), std::string::npos) << r.output;
  auto backbone = attn::models::load_vision_transformer(ssl + "/model.pt");
  auto tuned = attn::models::load_vision_transformer(out + "/model.pt");
  auto fresh = attn::models::VisionTransformer(tuned->options);
  auto pb = backbone->named_parameters(), pt = tuned->named_parameters();
  for (const auto &item : pb) {
    if (item.key().rfind("head.", 0) == 0)
      continue;
    EXPECT_LT((item.value() - pt[item.key()]).abs().max().item<double>(), 1e-6) << item.key();
  }
  EXPECT_GT((fresh->named_parameters()["encoder.blocks.0.mlp.fc1.linear.weight"] -
             pt["encoder.blocks.0.mlp.fc1.linear.weight"]).abs().max().item<double>(), 1e-3)
      << "the run did not start from the backbone";
  // A model built with other options is a usage error naming the tensor.
  auto bad = attnTrain("vit-supervised " + kDigits + "--sigma-reparam --steps=1 --init=" + ssl +
                       "/model.pt --out=" + freshDir("init-bad"));
  EXPECT_EQ(bad.exitCode, 2) << bad.output;
  EXPECT_NE(bad.output.find("--init"), std::string::npos) << bad.output;
}

TEST(RecipeRun, SslLeavesZeroGradientParametersAlone) {
  // The final-norm bias (removed by the projector's BatchNorm) and softmax's key bias (a constant
  // per query) have zero gradients; Adam used to walk them on rounding noise by about lr a step.
  // They now keep their initial value (0), while the parameters that learn move.
  auto out = freshDir("ssl-frozen");
  auto r = attnTrain("simclr " + kDigits + kSsl + "--temperature=0.5 --steps=5 --probe-steps=0 --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  auto model = attn::models::load_vision_transformer(out + "/model.pt");
  auto p = model->named_parameters();
  const int64_t e = model->options.embed_dim();
  auto bias = p["encoder.blocks.0.attention.qkv.linear.bias"];
  EXPECT_EQ(p["encoder.norm.bias"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(bias.slice(0, e, 2 * e).abs().max().item<double>(), 0.0);
  EXPECT_GT(bias.slice(0, 0, e).abs().max().item<double>(), 1e-4) << "query bias did not learn";
  EXPECT_GT(bias.slice(0, 2 * e).abs().max().item<double>(), 1e-4) << "value bias did not learn";
  EXPECT_GT((p["encoder.norm.weight"] - 1).abs().max().item<double>(), 1e-4);
  // LayerNorm heads do not remove the final-norm bias's shift: it trains there.
  auto layerOut = freshDir("ssl-frozen-layer");
  auto layer = attnTrain("simclr " + kDigits + kSsl + "--head-norm=layer --temperature=0.5 --steps=5 "
                         "--probe-steps=0 --out=" + layerOut);
  ASSERT_EQ(layer.exitCode, 0) << layer.output;
  auto layerModel = attn::models::load_vision_transformer(layerOut + "/model.pt");
  EXPECT_GT(layerModel->named_parameters()["encoder.norm.bias"].abs().max().item<double>(), 1e-4);
}

TEST(RecipeRun, PolyviewLossFalls) {
  auto out = freshDir("polyview");
  expectLossFalls(out, attnTrain("polyview " + kDigits + kSsl +
                                 "--views=3 --loss=arithmetic --temperature=0.5 --steps=40 --out=" + out));
}

TEST(RecipeRun, ByolDoesNotCollapse) {
  // A falling BYOL loss is no evidence of learning: with LayerNorm heads (--head-norm=layer) the
  // online network collapses to a constant and 2 − 2·cos reaches 0.001 within 40 steps. With
  // the paper's BatchNorm heads the targets keep changing and the loss stays near 1.
  auto out = freshDir("byol");
  auto r = attnTrain("byol " + kDigits + kSsl + "--steps=40 --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  auto loss = column(out, "loss");
  ASSERT_GE(loss.size(), 6u) << r.output;
  for (size_t i = loss.size() - 3; i < loss.size(); ++i)
    EXPECT_GT(loss[i], 0.1) << "step " << 5 * (i + 1) << ": collapsed";
  auto backbone = attn::models::load_vision_transformer(out + "/model.pt");
  EXPECT_GT(backbone->parameters().size(), 0u);
}

TEST(RecipeRun, ByolLearnsBeyondTheUntrainedEncoder) {
  // BYOL's loss falls even when it collapses; the k-NN accuracy of its features must rise. With
  // LayerNorm heads (--head-norm=layer, the old recipe) this run ends at 0.31 from 0.26; with the
  // paper's BatchNorm heads at 0.45.
  auto out = freshDir("byol-learns");
  auto r = attnTrain("byol " + kDigits + kSsl + "--steps=200 --knn-bank=1000 --knn-queries=300 --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  auto before = column(out, "knn_accuracy_step0"), after = column(out, "knn_accuracy");
  ASSERT_EQ(before.size(), 1u) << r.output;
  ASSERT_FALSE(after.empty()) << r.output;
  EXPECT_GT(after.back(), before[0] + 0.1) << r.output;
}

TEST(RecipeRun, Mp3BothPhasesLossFalls) {
  auto out = freshDir("mp3");
  auto r = attnTrain("mp3 " + kDigits + "--pretrain-steps=40 --pretrain-lr=5e-3 --steps=30 --lr=5e-3 "
                     "--log-every=5 --out=" + out);
  expectLossFalls(out + "/pretrain", r);
  expectLossFalls(out + "/finetune", r);
}

TEST(RecipeRun, DistillFromTeacherCheckpointLossFalls) {
  auto teacher = freshDir("teacher");
  auto t = attnTrain("vit-supervised " + kDigits + "--steps=40 --lr=5e-3 --out=" + teacher);
  ASSERT_EQ(t.exitCode, 0) << t.output;
  auto out = freshDir("distill");
  auto r = attnTrain("distill " + kDigits + "--teacher=" + teacher + "/model.pt --steps=40 --lr=5e-3 "
                     "--log-every=5 --out=" + out);
  expectLossFalls(out, r);
  EXPECT_EQ(column(out, "teacher_test_accuracy").size(), 1u);
}

TEST(RecipeRun, AsrCtcLossFalls) {
  auto out = freshDir("asr");
  auto r = attnTrain("asr-ctc --embed-dim=32 --depth=1 --heads=2 --subsampling-channels=8 --n-mels=20 "
                     "--batch-size=16 --steps=30 --lr=3e-3 --warmup-steps=3 --log-every=3 --progress=false "
                     "--plot=false --threads=1 --out=" + out);
  expectLossFalls(out, r);
  auto cer = column(out, "test_cer");
  ASSERT_EQ(cer.size(), 1u);
  EXPECT_GE(cer[0], 0.0);
}

TEST(RecipeRun, SigmoidAsrCtcTrainsWithThePapersStabilisers) {
  // --attention=sigmoid: QK-norm and LayerScale 0.1 by default; --norm=hybrid on request. The
  // checkpoint records what the model was built with.
  auto out = freshDir("asr-sigmoid");
  auto r = attnTrain("asr-ctc --attention=sigmoid --norm=hybrid --embed-dim=32 --depth=1 --heads=2 "
                     "--subsampling-channels=8 --n-mels=20 --batch-size=16 --steps=2 --warmup-steps=1 "
                     "--progress=false --plot=false --threads=1 --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  auto model = attn::models::load_speech_transformer(out + "/model.pt");
  EXPECT_TRUE(model->options.attention().qk_norm());
  EXPECT_DOUBLE_EQ(model->options.layer_scale_init(), 0.1);
  EXPECT_EQ(model->options.norm(), attn::models::BlockNorm::HybridNorm);
  EXPECT_EQ(model->options.attention().normalizer(), "sigmoid");
}

TEST(RecipeRun, ResumeContinuesWithTheSameLosses) {
  // RandAugment draws from the generator every step, so this also checks its state is restored.
  const std::string args = "vit-supervised " + kDigits +
                           "--augment=randaugment --steps=24 --lr=5e-3 --log-every=1 --checkpoint-every=8 ";
  auto straight = freshDir("straight");
  ASSERT_EQ(attnTrain(args + "--out=" + straight).exitCode, 0);
  auto resumed = freshDir("resumed");
  auto first = attnTrain(args + "--stop-after=12 --out=" + resumed);
  ASSERT_EQ(first.exitCode, 0) << first.output;
  ASSERT_EQ(column(resumed, "loss").size(), 12u);
  auto second = attnTrain(args + "--resume=auto --out=" + resumed);
  ASSERT_EQ(second.exitCode, 0) << second.output;
  EXPECT_NE(second.output.find("at step 12"), std::string::npos) << second.output;
  auto a = column(straight, "loss"), b = column(resumed, "loss");
  ASSERT_EQ(a.size(), 24u);
  ASSERT_EQ(b.size(), 24u);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i], b[i]) << "step " << i + 1; // bit-exact, not approximately equal
}

TEST(RecipeRun, TwoProcessesMatchOneWithTheSameGlobalBatch) {
  // With augmentation: one draw per (seed, step) for the global batch, sliced per rank (with
  // identically seeded per-rank generators rank 1 drew rank 0's crops for its own samples).
  const std::string args = "vit-supervised " + kDigits + "--augment=randaugment --steps=8 --lr=5e-3 --clip-grad-norm=0 ";
  auto single = freshDir("single");
  auto one = attnTrain(args + "--out=" + single);
  ASSERT_EQ(one.exitCode, 0) << one.output;

  auto parallel = freshDir("parallel");
  int port = 20000 + int(getpid() % 20000);
  std::string launch = args + "--world-size=2 --master-port=" + std::to_string(port) + " --out=" + parallel;
  auto [rank0, rank1] = attnTrainTwoRanks(launch);
  ASSERT_EQ(rank0.exitCode, 0) << rank0.output;
  ASSERT_EQ(rank1.exitCode, 0) << rank1.output;

  auto a = attn::models::load_vision_transformer(single + "/model.pt");
  auto b = attn::models::load_vision_transformer(parallel + "/model.pt");
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  double worst = 0;
  for (const auto &item : pa) {
    auto other = pb[item.key()];
    worst = std::max(worst, (item.value() - other).abs().max().item<double>());
  }
  // Same global batch, same initialisation: only the summation order of the gradient differs.
  EXPECT_LT(worst, 1e-5);
  auto initial = attn::models::VisionTransformer(a->options);
  double moved = (initial->named_parameters()["head.linear.weight"] - pa["head.linear.weight"]).abs().max().item<double>();
  EXPECT_GT(moved, 1e-4) << "training did not change the parameters";
}

TEST(RecipeRun, DataParallelByolKeepsTargetsInSync) {
  auto out = freshDir("byol-dp");
  int port = 20000 + int((getpid() + 7919) % 20000);
  std::string launch = "byol " + kDigits + kSsl + "--steps=6 --world-size=2 --master-port=" +
                       std::to_string(port) + " --out=" + out;
  auto [rank0, rank1] = attnTrainTwoRanks(launch);
  ASSERT_EQ(rank0.exitCode, 0) << rank0.output;
  ASSERT_EQ(rank1.exitCode, 0) << rank1.output;
  // The run compares online, predictor and target on every rank at the end.
  EXPECT_NE(rank0.output.find("all 3 modules identical on 2 ranks"), std::string::npos) << rank0.output;
}

// An SSL recipe on 2 ranks against 1 process with the same global batch: the augmentations are
// one draw per (seed, step) sliced per rank and the heads' BatchNorm statistics are the global
// batch's, so losses and parameters agree up to the order of summation. In float64: in float32
// BYOL with BatchNorm heads amplifies a rounding difference (Adam's first steps normalise
// near-zero gradients), so that one process with 2 threads differs from itself with 1 thread by
// 1e-4 in the loss after 4 steps; in float64 the runs agree to 1e-10.
void expectSslTwoProcessesMatchOne(const std::string &recipe, const std::string &options, int portSalt) {
  const std::string args = recipe + " " + kDigits + kSsl + options + "--dtype=float64 --steps=6 --log-every=1 ";
  auto single = freshDir(recipe + "-single");
  auto one = attnTrain(args + "--out=" + single);
  ASSERT_EQ(one.exitCode, 0) << one.output;
  auto parallel = freshDir(recipe + "-parallel");
  int port = 20000 + int((getpid() + portSalt) % 20000);
  std::string launch = args + "--world-size=2 --master-port=" + std::to_string(port) + " --out=" + parallel;
  auto [rank0, rank1] = attnTrainTwoRanks(launch);
  ASSERT_EQ(rank0.exitCode, 0) << rank0.output;
  ASSERT_EQ(rank1.exitCode, 0) << rank1.output;
  auto lossOne = column(single, "loss"), lossTwo = column(parallel, "loss");
  ASSERT_EQ(lossOne.size(), 6u);
  ASSERT_EQ(lossTwo.size(), 6u);
  for (size_t i = 0; i < lossOne.size(); ++i)
    EXPECT_NEAR(lossOne[i], lossTwo[i], 1e-8) << recipe << " step " << i + 1;
  auto a = attn::models::load_vision_transformer(single + "/model.pt");
  auto b = attn::models::load_vision_transformer(parallel + "/model.pt");
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  const int64_t embed = a->options.embed_dim();
  double worst = 0;
  std::string worstName;
  for (const auto &item : pa) {
    auto x = item.value(), y = pb[item.key()];
    if (item.key().find("qkv.linear.bias") != std::string::npos) {
      // The key bias adds a constant to each query's scores, which softmax ignores: its
      // gradient is zero and Adam walks it on rounding noise. Compare the query and value parts.
      x = torch::cat({x.slice(0, 0, embed), x.slice(0, 2 * embed)});
      y = torch::cat({y.slice(0, 0, embed), y.slice(0, 2 * embed)});
    }
    double difference = (x - y).abs().max().item<double>();
    if (difference > worst)
      worst = difference, worstName = item.key();
  }
  EXPECT_LT(worst, 1e-5) << recipe << ": " << worstName;
  auto initial = attn::models::VisionTransformer(a->options);
  EXPECT_GT((initial->named_parameters()["encoder.blocks.0.mlp.fc1.linear.weight"] -
             pa["encoder.blocks.0.mlp.fc1.linear.weight"]).abs().max().item<double>(), 1e-4)
      << "training did not change the parameters";
}

TEST(RecipeRun, ByolTwoProcessesMatchOne) { expectSslTwoProcessesMatchOne("byol", "", 104729); }

// BYOV samples its predictor's weights at every forward pass: the samples must come from a
// generator of (seed, step), the same on every rank, not from each process's default generator.
TEST(RecipeRun, ByovTwoProcessesMatchOne) {
  expectSslTwoProcessesMatchOne("byol", "--predictor=bayesian --kl-weight=100 ", 155921);
}

TEST(RecipeRun, SimclrTwoProcessesMatchOne) {
  expectSslTwoProcessesMatchOne("simclr", "--temperature=0.5 ", 130363);
}

TEST(RecipeRun, ByolAppliesTheEmaScalingRule) {
  auto out = freshDir("byol-ema");
  auto r = attnTrain("byol " + kDigits + kSsl + "--steps=6 --warmup-steps=0 --log-every=1 --momentum=0.99 "
                     "--momentum-schedule=false --ema-scaling-rule --reference-batch-size=32 --lr=1e-3 "
                     "--weight-decay=0.05 --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  // κ = 64/32 = 2: ρ̂ = 0.99², Adam's rule η̂ = √2·η (not SGD's 2·η), and 6 reference steps
  // become 3.
  const auto momenta = column(out, "momentum");
  EXPECT_EQ(momenta.size(), 3u);
  for (double rho : momenta)
    EXPECT_NEAR(rho, 0.9801, 1e-12);
  for (double lr : column(out, "lr"))
    EXPECT_LE(lr, std::sqrt(2.0) * 1e-3 + 1e-12);
  EXPECT_NE(r.output.find("momentum 0.9801, lr 0.001414, betas (0.8, 0.998), eps 7.071e-09, "
                          "weight decay 0.07071, steps 3"),
            std::string::npos)
      << r.output;
}

/// Every tensor under `prefix` of a training checkpoint (OUT/checkpoint.pt), by its full path.
void collectTensors(torch::serialize::InputArchive &archive, const std::string &prefix,
                    std::map<std::string, torch::Tensor> &out) {
  for (const auto &key : archive.keys()) {
    torch::Tensor tensor;
    if (archive.try_read(key, tensor)) {
      out[prefix + key] = tensor;
      continue;
    }
    torch::serialize::InputArchive child;
    if (archive.try_read(key, child))
      collectTensors(child, prefix + key + ".", out);
  }
}
std::map<std::string, torch::Tensor> checkpointModule(const std::string &path, const std::string &module) {
  torch::serialize::InputArchive archive, child;
  archive.load_from(path);
  std::map<std::string, torch::Tensor> tensors;
  if (archive.try_read("module/" + module, child))
    collectTensors(child, "", tensors);
  return tensors;
}

TEST(RecipeRun, BfloatSixteenByolKeepsFloat32MastersAndMovesItsTarget) {
  // --dtype=bfloat16 is mixed precision: products in bfloat16 under autocast, parameters stay the
  // optimizer's float32 masters, and BYOL's EMA target is updated in float32. With the parameters
  // stored in bfloat16 the target's norm weights (initialised to 1) never moved: the EMA step
  // (1 − ρ)·(online − target) ≤ 0.01 · 0.1 stays below half of bfloat16's spacing at 1 (3.9e-3).
  auto out = freshDir("byol-bf16");
  auto r = attnTrain("byol " + kDigits + kSsl + "--dtype=bfloat16 --steps=10 --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  for (const char *module : {"online", "predictor", "target"}) {
    auto tensors = checkpointModule(out + "/checkpoint.pt", module);
    ASSERT_FALSE(tensors.empty()) << module;
    for (const auto &[name, tensor] : tensors)
      EXPECT_EQ(tensor.scalar_type(), torch::kFloat32) << module << "." << name;
  }
  int64_t normWeights = 0, moved = 0;
  for (const auto &[name, tensor] : checkpointModule(out + "/checkpoint.pt", "target")) {
    if (name.find("norm") == std::string::npos || name.size() < 7 ||
        name.compare(name.size() - 7, 7, ".weight") != 0 || tensor.dim() != 1)
      continue;
    normWeights += tensor.numel();
    moved += tensor.ne(1.0).sum().item<int64_t>();
  }
  ASSERT_GT(normWeights, 0);
  EXPECT_GT(double(moved), 0.9 * double(normWeights)) << moved << " of " << normWeights << " moved";
  auto loss = column(out, "loss");
  ASSERT_FALSE(loss.empty());
  EXPECT_TRUE(std::isfinite(loss.back()));
}

TEST(RecipeRun, UserMistakesExitWithAMessage) {
  auto unknown = attnTrain("vit-supervised --bogus-key=1");
  EXPECT_EQ(unknown.exitCode, 2);
  EXPECT_NE(unknown.output.find("unknown option for vit-supervised: --bogus-key"), std::string::npos) << unknown.output;
  auto bad = attnTrain("byol --steps=-3");
  EXPECT_EQ(bad.exitCode, 2);
  EXPECT_NE(bad.output.find("--steps must be positive"), std::string::npos) << bad.output;
  auto noData = attnTrain("vit-supervised --data-dir=/nonexistent --progress=false");
  EXPECT_EQ(noData.exitCode, 2);
  EXPECT_NE(noData.output.find("missing data file '/nonexistent/fashion-mnist/"), std::string::npos) << noData.output;
  auto noTeacher = attnTrain("distill --dataset=digits");
  EXPECT_EQ(noTeacher.exitCode, 2);
  EXPECT_NE(noTeacher.output.find("--teacher=PATH is required"), std::string::npos) << noTeacher.output;
  auto attention = attnTrain("simclr --attention=nosuch.mlir");
  EXPECT_EQ(attention.exitCode, 2);
  EXPECT_NE(attention.output.find("--attention"), std::string::npos) << attention.output;
  auto recipe = attnTrain("vit-unsupervised");
  EXPECT_EQ(recipe.exitCode, 2);
  EXPECT_NE(recipe.output.find("unknown recipe"), std::string::npos) << recipe.output;
  auto help = attnTrain("polyview --help");
  EXPECT_EQ(help.exitCode, 0);
  EXPECT_NE(help.output.find("--views"), std::string::npos) << help.output;
}

} // namespace
