// The seed papers' methods against hand-computed values (plain double arithmetic): the ER bound
// (vMF kernel entropy, vMF reconstruction, the Bessel normaliser), calibration (ECE, Brier),
// BYOV's Bayes-by-Backprop layer (closed-form KL, sampling) and EWC (Fisher, penalty).
#include "models/data/Augment.h"
#include "models/recipes/BayesianHead.h"
#include "models/recipes/Calibration.h"
#include "models/recipes/ErBound.h"
#include "models/recipes/Ewc.h"
#include "models/recipes/Vision.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace {
namespace recipes = attn::recipes;
namespace data = attn::data;
using Vec = std::vector<double>;

double dot(const Vec &a, const Vec &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}
Vec unit(const Vec &a) {
  double n = std::sqrt(dot(a, a));
  Vec u;
  for (double x : a)
    u.push_back(x / n);
  return u;
}
torch::Tensor rows(const std::vector<Vec> &v) {
  std::vector<double> flat;
  for (const auto &r : v)
    flat.insert(flat.end(), r.begin(), r.end());
  return torch::tensor(flat, torch::kFloat64).view({int64_t(v.size()), int64_t(v[0].size())});
}

// --- ER bound ---------------------------------------------------------------------------------

TEST(ErBound, LogBesselMatchesTheStandardLibrary) {
  for (auto [v, x] : std::vector<std::pair<double, double>>{{0, 1}, {0, 2}, {0.5, 2}, {1.5, 0.3}, {31, 10}, {7, 40}})
    EXPECT_NEAR(recipes::logModifiedBesselI(v, x), std::log(std::cyl_bessel_i(v, x)), 1e-10) << v << ", " << x;
  // Order 383 (d = 768) at κ = 10: I_v underflows a double, its logarithm does not.
  double large = recipes::logModifiedBesselI(383, 10);
  EXPECT_TRUE(std::isfinite(large));
  EXPECT_LT(large, -1000);
  EXPECT_THROW(recipes::logModifiedBesselI(1, 0), std::invalid_argument);
}

TEST(ErBound, VmfNormaliserHasItsClosedForms) {
  for (double kappa : {0.5, 2.0, 10.0}) {
    // S²: C₃(κ) = κ / (4π sinh κ); S¹: C₂(κ) = 1 / (2π I₀(κ)).
    EXPECT_NEAR(recipes::logVmfNormaliser(3, kappa), std::log(kappa / (4 * M_PI * std::sinh(kappa))), 1e-10);
    EXPECT_NEAR(recipes::logVmfNormaliser(2, kappa), -std::log(2 * M_PI * std::cyl_bessel_i(0.0, kappa)), 1e-10);
  }
  EXPECT_THROW(recipes::logVmfNormaliser(1, 1.0), std::invalid_argument);
}

TEST(ErBound, EntropyAndReconstructionMatchAHandComputation) {
  const double kappa = 2.0;
  const double logC = std::log(kappa / (4 * M_PI * std::sinh(kappa))); // d = 3
  // Unnormalised rows: the bound normalises them onto S².
  const std::vector<Vec> z = {{2, 0, 0}, {0, 3, 0}, {0.6, 0.8, 0}};
  double entropy = 0;
  for (const auto &zi : z) {
    double density = 0;
    for (const auto &zj : z)
      density += std::exp(logC + kappa * dot(unit(zi), unit(zj))) / 3;
    entropy -= std::log(density) / 3;
  }
  EXPECT_NEAR(recipes::vmfKdeEntropy(rows(z), kappa).item<double>(), entropy, 1e-12);

  const std::vector<Vec> prediction = {{1, 1, 0}, {0, 0, 5}}, target = {{0, 0, 2}, {0, 1, 1}};
  double reconstruction = 0;
  for (size_t i = 0; i < prediction.size(); ++i)
    reconstruction += (logC + kappa * dot(unit(prediction[i]), unit(target[i]))) / 2;
  EXPECT_NEAR(recipes::vmfReconstruction(rows(prediction), rows(target), kappa).item<double>(), reconstruction,
              1e-12);

  auto terms = recipes::erBound(rows({z[0], z[1]}), rows(prediction), rows(target), kappa);
  EXPECT_NEAR(terms.loss().item<double>(),
              -(recipes::vmfKdeEntropy(rows({z[0], z[1]}), kappa) + reconstruction).item<double>(), 1e-12);
}

TEST(ErBound, SpreadEmbeddingsHaveMoreEntropyAndTheGradientSpreadsThem) {
  auto clustered = rows({{1, 0.1, 0}, {1, -0.1, 0}, {1, 0, 0.1}});
  auto spread = rows({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}});
  EXPECT_GT(recipes::vmfKdeEntropy(spread, 5).item<double>(), recipes::vmfKdeEntropy(clustered, 5).item<double>());
  // One gradient-ascent step on Ĥ moves the clustered points apart (their mean cosine falls).
  auto x = clustered.clone().requires_grad_();
  recipes::vmfKdeEntropy(x, 5).backward();
  auto moved = torch::nn::functional::normalize((x + 0.1 * x.grad()).detach(),
                                                torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto before = torch::nn::functional::normalize(clustered, torch::nn::functional::NormalizeFuncOptions().dim(1));
  EXPECT_LT(moved.matmul(moved.t()).sum().item<double>(), before.matmul(before.t()).sum().item<double>());
}

// --- Calibration ------------------------------------------------------------------------------

TEST(Calibration, EceAndBrierMatchAHandComputation) {
  // Confidences 0.85, 0.65, 0.72, 0.95; predictions 0, 0, 1, 1 against labels 0, 1, 1, 1.
  auto p = torch::tensor({0.85, 0.15, 0.65, 0.35, 0.28, 0.72, 0.05, 0.95}, torch::kFloat64).view({4, 2});
  auto labels = torch::tensor({0, 1, 1, 1}, torch::kInt64);
  // 15 bins: each prediction alone in its bin, ECE = mean |correct − confidence|.
  EXPECT_NEAR(recipes::expectedCalibrationError(p, labels, 15), (0.15 + 0.65 + 0.28 + 0.05) / 4, 1e-12);
  // 2 bins: all in (0.5, 1]: |accuracy 0.75 − mean confidence 0.7925|.
  EXPECT_NEAR(recipes::expectedCalibrationError(p, labels, 2), 0.0425, 1e-12);
  // Σ_c (p_c − y_c)² per row: 0.045, 0.845, 0.1568, 0.005.
  EXPECT_NEAR(recipes::brierScore(p, labels), (0.045 + 0.845 + 0.1568 + 0.005) / 4, 1e-12);
  // A perfect, certain classifier.
  auto certain = torch::tensor({1.0, 0.0, 0.0, 1.0}, torch::kFloat64).view({2, 2});
  auto right = torch::tensor({0, 1}, torch::kInt64);
  EXPECT_EQ(recipes::expectedCalibrationError(certain, right), 0.0);
  EXPECT_EQ(recipes::brierScore(certain, right), 0.0);
  EXPECT_THROW(recipes::brierScore(p, torch::tensor({0, 1}, torch::kInt64)), c10::Error);
}

// --- BYOV's Bayes-by-Backprop layer -----------------------------------------------------------

TEST(BayesianLinear, KlToThePriorMatchesTheClosedForm) {
  recipes::BayesianLinear layer(1, 1, /*priorSigma=*/0.1);
  layer->to(torch::kFloat64);
  {
    torch::NoGradGuard noGrad;
    layer->weightMu.fill_(0.3);
    layer->weightRho.fill_(std::log(std::expm1(0.05))); // σ = 0.05
    layer->biasMu.fill_(-0.1);
    layer->biasRho.fill_(std::log(std::expm1(0.2))); // σ = 0.2
  }
  // log(σ_p/σ) + (σ² + μ²)/(2σ_p²) − ½ per parameter.
  double weight = std::log(2.0) + (0.0025 + 0.09) / 0.02 - 0.5;
  double bias = std::log(0.5) + (0.04 + 0.01) / 0.02 - 0.5;
  EXPECT_NEAR(layer->kl().item<double>(), weight + bias, 1e-12);
  // One weight sample per forward pass, shared by the batch's rows (Bayes by Backprop's
  // minibatch estimate): y = w·x + b with w ~ N(0.3, 0.05²), b ~ N(−0.1, 0.2²).
  auto x = torch::full({3, 1}, 2.0, torch::kFloat64);
  torch::manual_seed(0);
  std::vector<torch::Tensor> draws;
  for (int i = 0; i < 20000; ++i) {
    auto y = layer->forward(x);
    ASSERT_EQ(y.min().item<double>(), y.max().item<double>());
    draws.push_back(y[0]);
  }
  auto y = torch::cat(draws);
  EXPECT_NEAR(y.mean().item<double>(), 0.5, 0.01);
  EXPECT_NEAR(y.std().item<double>(), std::sqrt(4 * 0.0025 + 0.04), 0.01);
  // The mean path is exact.
  EXPECT_NEAR(layer->forward(x, /*useMean=*/true).max().item<double>(), 0.5, 1e-12);
  EXPECT_NEAR(layer->forward(x, true).min().item<double>(), 0.5, 1e-12);
}

TEST(BayesianLinear, HeadSumsItsLayersKlAndSamplesEachCall) {
  recipes::BayesianMlpHead head(4, 8, 3, 0.1);
  EXPECT_NEAR(head->kl().item<double>(), (head->fc1->kl() + head->fc2->kl()).item<double>(), 1e-9);
  auto x = torch::randn({6, 4});
  EXPECT_FALSE(torch::equal(head->forward(x), head->forward(x)));
  EXPECT_NEAR(recipes::meanPosteriorSigma(*head), 0.01, 1e-6);
}

TEST(BayesianLinear, StepGeneratorFixesTheWeightSampleWhateverElseDrew) {
  // The recipe's weight samples are a function of (seed, step): the same draw on every rank,
  // however far each process's default generator has moved (evaluations sample too).
  recipes::BayesianMlpHead head(4, 8, 3, 0.1);
  head->eval(); // running BatchNorm statistics: the output depends on the weight sample alone
  auto x = torch::randn({6, 4});
  auto sampled = [&](uint64_t seed, int64_t step, int64_t defaultDraws) {
    torch::rand({defaultDraws}); // another part of the process using torch's default generator
    auto generator = recipes::posteriorSampleGenerator(seed, step);
    return head->forward(x, /*useMean=*/false, &generator);
  };
  auto a = sampled(0, 7, 1), b = sampled(0, 7, 1000);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, sampled(0, 8, 1)));
  EXPECT_FALSE(torch::equal(a, sampled(1, 7, 1)));
  EXPECT_FALSE(torch::equal(a, head->forward(x, /*useMean=*/true)));
  // Its stream is not the augmentations' of the same (seed, step).
  auto augment = data::SampleRandom::forStep(0, 7, 4, 0).rand(4, torch::zeros({1}));
  auto generator = recipes::posteriorSampleGenerator(0, 7);
  EXPECT_FALSE(torch::allclose(augment, torch::rand({4}, generator)));
}

TEST(BayesianLinear, PredictiveStdGrowsWithThePosteriorsSpread) {
  // The head's eval-mode spread comes from the weight posterior only: it vanishes as σ → 0 and
  // grows with σ.
  recipes::BayesianMlpHead head(4, 8, 3, 0.1);
  auto x = torch::randn({32, 4});
  auto setSigma = [&](double sigma) {
    torch::NoGradGuard noGrad;
    for (auto *layer : {head->fc1.get(), head->fc2.get()}) {
      layer->weightRho.fill_(std::log(std::expm1(sigma)));
      layer->biasRho.fill_(std::log(std::expm1(sigma)));
    }
  };
  setSigma(1e-6);
  double tiny = recipes::predictiveStd(*head, x, 32);
  setSigma(0.05);
  double small = recipes::predictiveStd(*head, x, 32);
  setSigma(0.2);
  double large = recipes::predictiveStd(*head, x, 32);
  EXPECT_LT(tiny, 1e-4);
  EXPECT_GT(small, 10 * tiny);
  EXPECT_GT(large, 2 * small);
  EXPECT_TRUE(head->is_training()); // restored
  EXPECT_THROW(recipes::predictiveStd(*head, x, 1), c10::Error);
}

// --- EWC --------------------------------------------------------------------------------------

TEST(Ewc, FisherOfALinearFeatureMapIsTheMeanSquaredInput) {
  // f(x) = W x + b: ∂f_k/∂W_kj = x_j, so the Fisher of N(f(x), I) is F(W_kj) = E[x_j²],
  // F(b_k) = 1; with one sample per batch the Rademacher estimate is exact. The unused layer's
  // Fisher is 0.
  torch::nn::Sequential model(torch::nn::Linear(3, 2), torch::nn::Linear(2, 2));
  model->to(torch::kFloat64);
  auto first = model[0]->as<torch::nn::Linear>();
  std::vector<torch::Tensor> batches = {torch::tensor({{1.0, 2.0, -1.0}}, torch::kFloat64),
                                        torch::tensor({{0.5, 0.0, 3.0}}, torch::kFloat64)};
  auto fisher = recipes::featureFisherDiagonal(
      *model, [&](const torch::Tensor &x) { return first->forward(x); }, batches, 7);
  auto expectedRow = torch::tensor({(1 + 0.25) / 2, (4 + 0.0) / 2, (1 + 9.0) / 2});
  EXPECT_TRUE(torch::allclose(fisher["0.weight"], expectedRow.expand({2, 3}), 0, 1e-6)) << fisher["0.weight"];
  EXPECT_TRUE(torch::allclose(fisher["0.bias"], torch::ones({2}), 0, 1e-6));
  EXPECT_EQ(fisher["1.weight"].abs().sum().item<double>(), 0.0);
}

TEST(Ewc, PenaltyAndGradientMatchAHandComputation) {
  torch::nn::Linear layer(2, 1);
  layer->to(torch::kFloat64);
  {
    torch::NoGradGuard noGrad;
    layer->weight.copy_(torch::tensor({{1.0, -2.0}}));
    layer->bias.fill_(0.5);
  }
  torch::OrderedDict<std::string, torch::Tensor> fisher;
  fisher.insert("weight", torch::tensor({{4.0, 0.5}}));
  recipes::EwcPenalty penalty(*layer, fisher, /*lambda=*/3.0); // the bias is not held
  EXPECT_TRUE(penalty.active());
  EXPECT_EQ(penalty().item<double>(), 0.0); // at θ*
  {
    torch::NoGradGuard noGrad;
    layer->weight.copy_(torch::tensor({{1.5, -1.0}})); // Δ = (0.5, 1)
    layer->bias.fill_(7.0);
  }
  auto value = penalty();
  EXPECT_NEAR(value.item<double>(), 1.5 * (4.0 * 0.25 + 0.5 * 1.0), 1e-6); // (λ/2)·Σ F Δ²
  value.backward();
  // ∂/∂θ = λ·F·Δ.
  EXPECT_TRUE(torch::allclose(layer->weight.grad(), torch::tensor({{6.0, 1.5}}, torch::kFloat64), 0, 1e-6));
  EXPECT_FALSE(layer->bias.grad().defined() && layer->bias.grad().abs().sum().item<double>() > 0);
  EXPECT_NEAR(penalty.fisherTotal(), 4.5, 1e-12);
}

// --- --classes: a fine-tuning task on part of the classes, the rest to measure forgetting on ----

TEST(Classes, ListParsesRangesAndKeepsThoseImagesWithTheirLabels) {
  EXPECT_EQ(recipes::parseClassList(""), std::vector<int64_t>{});
  EXPECT_EQ(recipes::parseClassList("0-4"), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(recipes::parseClassList("9,5-6,5"), (std::vector<int64_t>{5, 6, 9}));
  for (const char *bad : {"a", "1-", "-3", "4-2", "1,,2", "1;2", " 1"})
    EXPECT_THROW(recipes::parseClassList(bad), attn::train::UsageError) << bad;
  data::ImageSet set;
  set.labels = torch::tensor({3, 0, 7, 3, 9, 1}, torch::kInt64);
  set.images = torch::arange(6, torch::kFloat32).view({6, 1, 1, 1});
  set.numClasses = 10;
  auto kept = recipes::keepClasses(set, {3, 9});
  EXPECT_TRUE(torch::equal(kept.labels, torch::tensor({3, 3, 9}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(kept.images.flatten(), torch::tensor({0.0f, 3.0f, 4.0f})));
  EXPECT_EQ(kept.numClasses, 10);
  EXPECT_EQ(recipes::keepClasses(set, {}).size(), 6);
}

} // namespace
