// The seed methods as attn-train runs them: BYOL with the ER objective, BYOV (Bayesian
// predictor, calibration reported), EWC fine-tuning from an SSL checkpoint, and fine-tuning
// from MP3's pretrained backbone.
#include "models/Checkpoint.h"
#include "test/recipes/AttnTrainRun.h"

#include <gtest/gtest.h>

namespace {
using namespace attn_train_run;

TEST(SeedMethodsRun, ByolWithTheErObjectiveLearns) {
  // At initialisation the online and target projections nearly agree (reconstruction near its
  // maximum) and the batch's projections are bunched (low entropy): ER trades some
  // reconstruction for entropy, and the encoder learns (k-NN 0.26 → 0.45 in this run, as BYOL's).
  auto out = freshDir("byol-er");
  auto r = attnTrain("byol " + kDigits + kSsl + "--objective=er --steps=200 --knn-bank=1000 --knn-queries=300 --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  auto loss = column(out, "loss"), entropy = column(out, "er_entropy"), reconstruction = column(out, "er_reconstruction");
  ASSERT_EQ(entropy.size(), loss.size()) << r.output;
  ASSERT_EQ(reconstruction.size(), loss.size());
  for (size_t i = 0; i < loss.size(); ++i) // loss = −(Ĥ + reconstruction), summed over the two directions
    EXPECT_NEAR(loss[i], -2 * (entropy[i] + reconstruction[i]), 1e-3 * (1 + std::abs(loss[i])));
  EXPECT_GT(entropy.back(), entropy.front() + 0.3) << r.output;
  auto before = column(out, "knn_accuracy_step0"), after = column(out, "knn_accuracy");
  ASSERT_EQ(before.size(), 1u) << r.output;
  EXPECT_GT(after.back(), before[0] + 0.1) << r.output;
  EXPECT_EQ(attnTrain("byol --objective=er --er-kappa=0").exitCode, 2);
}

TEST(SeedMethodsRun, ByovTrainsItsPosteriorAndReportsCalibration) {
  auto out = freshDir("byov");
  auto r = attnTrain("byol " + kDigits + kSsl + "--predictor=bayesian --kl-weight=100 --steps=40 "
                     "--probe-train=300 --probe-test=100 --probe-steps=50 --out=" + out);
  expectLossFalls(out, r);
  auto kl = column(out, "kl"), sigma = column(out, "predictor_sigma");
  ASSERT_FALSE(kl.empty()) << r.output;
  EXPECT_GT(kl.front(), 0);
  EXPECT_NE(sigma.back(), sigma.front()) << "the posterior's σ did not train";
  auto spread = column(out, "predictive_std");
  ASSERT_EQ(spread.size(), 1u) << r.output;
  EXPECT_GT(spread[0], 0.0);
  for (const std::string name : {"linear_probe_ece", "linear_probe_ece_step0"}) {
    auto values = column(out, name);
    ASSERT_EQ(values.size(), 1u) << name << "\n" << r.output;
    EXPECT_GE(values[0], 0.0);
    EXPECT_LE(values[0], 1.0);
  }
  for (const std::string name : {"linear_probe_brier", "linear_probe_brier_step0"}) {
    auto values = column(out, name);
    ASSERT_EQ(values.size(), 1u) << name;
    EXPECT_GT(values[0], 0.0);
    EXPECT_LE(values[0], 2.0);
  }
  EXPECT_EQ(attnTrain("byol --predictor=bayesian --head-norm=layer").exitCode, 2);
}

TEST(SeedMethodsRun, ByovTrainingDoesNotDependOnHowOftenItEvaluates) {
  // The evaluations draw random numbers (the probe's initialisation, the predictive spread's
  // weight samples); the training run's weight samples must not come from that same stream.
  const std::string args = "byol " + kDigits + kSsl + "--predictor=bayesian --kl-weight=100 --dtype=float64 "
                           "--steps=6 --log-every=1 --probe-train=200 --probe-test=100 --probe-steps=20 ";
  auto quiet = freshDir("byov-eval-end"), busy = freshDir("byov-eval-2");
  auto a = attnTrain(args + "--eval-every=0 --out=" + quiet);
  ASSERT_EQ(a.exitCode, 0) << a.output;
  auto b = attnTrain(args + "--eval-every=2 --out=" + busy);
  ASSERT_EQ(b.exitCode, 0) << b.output;
  auto lossA = column(quiet, "loss"), lossB = column(busy, "loss");
  ASSERT_EQ(lossA.size(), 6u);
  ASSERT_EQ(lossB.size(), 6u);
  for (size_t i = 0; i < lossA.size(); ++i)
    EXPECT_NEAR(lossA[i], lossB[i], 1e-8) << "step " << i + 1;
}

double distanceFromBackbone(const std::string &backbonePath, const std::string &tunedPath) {
  auto backbone = attn::models::load_vision_transformer(backbonePath);
  auto tuned = attn::models::load_vision_transformer(tunedPath);
  auto pt = tuned->named_parameters();
  double squared = 0;
  for (const auto &item : backbone->named_parameters())
    if (item.key().rfind("head.", 0) != 0)
      squared += (item.value() - pt[item.key()]).pow(2).sum().item<double>();
  return std::sqrt(squared);
}

TEST(SeedMethodsRun, EwcHoldsTheFineTunedBackboneNearTheSslCheckpoint) {
  auto ssl = freshDir("ewc-ssl");
  auto pre = attnTrain("simclr " + kDigits + kSsl + "--temperature=0.5 --steps=5 --probe-steps=0 --out=" + ssl);
  ASSERT_EQ(pre.exitCode, 0) << pre.output;
  const std::string tune = "vit-supervised " + kDigits + "--steps=100 --lr=5e-3 --log-every=10 --init=" + ssl + "/model.pt ";
  auto plainOut = freshDir("ewc-plain"), ewcOut = freshDir("ewc-held");
  auto plain = attnTrain(tune + "--out=" + plainOut);
  auto held = attnTrain(tune + "--ewc-lambda=100 --out=" + ewcOut);
  ASSERT_EQ(plain.exitCode, 0) << plain.output;
  expectLossFalls(ewcOut, held);
  EXPECT_NE(held.output.find("ewc: λ = 100,"), std::string::npos) << held.output;
  auto penalty = column(ewcOut, "ewc_penalty");
  ASSERT_FALSE(penalty.empty());
  EXPECT_GT(penalty.back(), 0);
  double free = distanceFromBackbone(ssl + "/model.pt", plainOut + "/model.pt");
  double anchored = distanceFromBackbone(ssl + "/model.pt", ewcOut + "/model.pt");
  EXPECT_LT(anchored, 0.7 * free) << "EWC did not hold the backbone: " << anchored << " vs " << free;
  auto noInit = attnTrain("vit-supervised --ewc-lambda=1");
  EXPECT_EQ(noInit.exitCode, 2);
  EXPECT_NE(noInit.output.find("--ewc-lambda needs --init"), std::string::npos) << noInit.output;
}

TEST(SeedMethodsRun, ClassesMakeATaskOfPartOfTheDataAndAnSslRunMeasuresACheckpointOnTheRest) {
  // The forgetting measurement of the results table: fine-tune on some classes, then the frozen
  // backbone's k-NN on the others (byol --steps=1 --init: its _step0 figures are the checkpoint's).
  auto tuned = freshDir("classes-tuned");
  auto r = attnTrain("vit-supervised " + kDigits + "--classes=0,1 --steps=100 --lr=5e-3 --log-every=20 --out=" + tuned);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  auto accuracy = column(tuned, "test_accuracy");
  ASSERT_FALSE(accuracy.empty()) << r.output;
  EXPECT_GT(accuracy.back(), 0.9) << "two classes only: 0 vs 1 is easy (all ten: 33 % in this run)";
  auto held = freshDir("classes-held");
  auto h = attnTrain("byol " + kDigits + kSsl + "--classes=2-9 --steps=1 --warmup-steps=0 --probe-steps=0 --init=" + tuned +
                     "/model.pt --out=" + held);
  ASSERT_EQ(h.exitCode, 0) << h.output;
  auto knn = column(held, "knn_accuracy_step0");
  ASSERT_EQ(knn.size(), 1u) << h.output;
  EXPECT_GT(knn[0], 1.0 / 8);
  auto tooMany = attnTrain("vit-supervised " + kDigits + "--classes=3-10 --out=" + freshDir("classes-bad"));
  EXPECT_EQ(tooMany.exitCode, 2);
  EXPECT_NE(tooMany.output.find("--classes: digits has classes 0-9, not 10"), std::string::npos) << tooMany.output;
  auto notAList = attnTrain("vit-supervised --classes=a-b");
  EXPECT_EQ(notAList.exitCode, 2);
  EXPECT_NE(notAList.output.find("--classes: 'a-b' is not a list"), std::string::npos) << notAList.output;
}

TEST(SeedMethodsRun, Mp3sPretrainedBackboneFineTunesWithInit) {
  auto mp3 = freshDir("mp3-init");
  auto pre = attnTrain("mp3 " + kDigits + "--pretrain-steps=5 --steps=2 --log-every=1 --out=" + mp3);
  ASSERT_EQ(pre.exitCode, 0) << pre.output;
  attn::models::CheckpointMeta meta;
  auto backbone = attn::models::load_vision_transformer(mp3 + "/pretrain/model.pt", &meta);
  EXPECT_EQ(meta["recipe"], "mp3-pretrain");
  EXPECT_FALSE(backbone->position_embedding.defined());
  auto out = freshDir("mp3-init-vit");
  auto r = attnTrain("vit-supervised " + kDigits + "--pool=mean --steps=2 --lr=1e-12 --warmup-steps=0 "
                     "--ewc-lambda=10 --ewc-samples=128 --init=" + mp3 + "/pretrain/model.pt --out=" + out);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  EXPECT_NE(r.output.find("recipe mp3-pretrain, head left fresh"), std::string::npos) << r.output;
  auto tuned = attn::models::load_vision_transformer(out + "/model.pt");
  EXPECT_TRUE(tuned->position_embedding.defined()); // fresh: MP3 pretrains without positions
  auto pt = tuned->named_parameters();
  for (const auto &item : backbone->named_parameters())
    if (item.key().rfind("head.", 0) != 0) {
      EXPECT_LT((item.value() - pt[item.key()]).abs().max().item<double>(), 1e-6) << item.key();
    }
  // mp3 --init fine-tunes that backbone itself, without pretraining again.
  auto again = freshDir("mp3-init-again");
  auto r2 = attnTrain("mp3 " + kDigits + "--steps=2 --lr=1e-12 --warmup-steps=0 --log-every=1 --init=" + mp3 +
                      "/pretrain/model.pt --out=" + again);
  ASSERT_EQ(r2.exitCode, 0) << r2.output;
  EXPECT_FALSE(fs::exists(again + "/pretrain")) << r2.output;
  auto fineTuned = attn::models::load_vision_transformer(again + "/model.pt");
  auto pf = fineTuned->named_parameters();
  for (const auto &item : backbone->named_parameters())
    if (item.key().rfind("head.", 0) != 0) {
      EXPECT_LT((item.value() - pf[item.key()]).abs().max().item<double>(), 1e-6) << item.key();
    }
  // A checkpoint with position embeddings is not an MP3 backbone: a usage error.
  auto wrong = attnTrain("mp3 " + kDigits + "--steps=1 --init=" + out + "/model.pt --out=" + freshDir("mp3-init-bad"));
  EXPECT_EQ(wrong.exitCode, 2) << wrong.output;
  EXPECT_NE(wrong.output.find("position_embedding"), std::string::npos) << wrong.output;
}

} // namespace
