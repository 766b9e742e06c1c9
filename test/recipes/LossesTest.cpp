// The recipes' objectives against hand-computed values (plain double arithmetic, no torch ops).
#include "models/recipes/Losses.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace {

using attn::recipes::PolyViewAggregation;
using Vec = std::vector<double>;

double cosine(const Vec &a, const Vec &b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / std::sqrt(na * nb);
}

// views[α][i] for M = 3 views of N = 2 samples in 2-D.
const std::vector<std::vector<Vec>> kViews = {
    {{1.0, 0.0}, {0.0, 1.0}},
    {{0.8, 0.6}, {-0.6, 0.8}},
    {{0.6, -0.8}, {0.28, 0.96}},
};
constexpr double kTau = 0.5;

torch::Tensor viewsTensor() {
  std::vector<double> flat;
  for (const auto &view : kViews)
    for (const auto &z : view)
      for (double x : z)
        flat.push_back(x);
  return torch::tensor(flat, torch::kFloat64).view({3, 2, 2});
}

// --- Poly-view: an independent, direct float64 computation (plain loops, no torch ops) -------

using Views = std::vector<std::vector<Vec>>; // [M][N][D]

Views randomViews(size_t m, size_t n, size_t d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  Views views(m, std::vector<Vec>(n, Vec(d)));
  for (auto &view : views)
    for (auto &z : view)
      for (double &x : z)
        x = normal(rng);
  return views;
}

torch::Tensor toTensor(const Views &views) {
  std::vector<double> flat;
  for (const auto &view : views)
    for (const auto &z : view)
      flat.insert(flat.end(), z.begin(), z.end());
  return torch::tensor(flat, torch::kFloat64)
      .view({int64_t(views.size()), int64_t(views[0].size()), int64_t(views[0][0].size())});
}

// SimCLR's NT-Xent as its paper states it: 2N embeddings u_k (view 1 then view 2); each anchor's
// loss is −log(exp(sim(u_k, u_partner)/τ) / Σ_{l≠k} exp(sim(u_k, u_l)/τ)), averaged over the 2N.
double referenceNtXent(const std::vector<Vec> &view1, const std::vector<Vec> &view2, double tau) {
  std::vector<Vec> u(view1);
  u.insert(u.end(), view2.begin(), view2.end());
  const size_t n = view1.size(), total = u.size();
  double loss = 0;
  for (size_t k = 0; k < total; ++k) {
    size_t partner = k < n ? k + n : k - n;
    double denominator = 0;
    for (size_t l = 0; l < total; ++l)
      if (l != k)
        denominator += std::exp(cosine(u[k], u[l]) / tau);
    loss += -std::log(std::exp(cosine(u[k], u[partner]) / tau) / denominator);
  }
  return loss / double(total);
}

// Shidani et al.: anchor (α, i), candidates every (γ, j) ≠ (α, i); ℓ^{α,β} = exp s(α,i;β,i) / Σ
// over the candidates; geometric −mean_β log ℓ, arithmetic −log mean_β ℓ; mean over anchors.
double referencePolyView(const Views &views, double tau, bool geometric) {
  const size_t m = views.size(), n = views[0].size();
  double loss = 0;
  for (size_t a = 0; a < m; ++a)
    for (size_t i = 0; i < n; ++i) {
      double denominator = 0;
      for (size_t g = 0; g < m; ++g)
        for (size_t j = 0; j < n; ++j)
          if (g != a || j != i)
            denominator += std::exp(cosine(views[a][i], views[g][j]) / tau);
      double sumLog = 0, sumLikelihood = 0;
      for (size_t b = 0; b < m; ++b) {
        if (b == a)
          continue;
        double likelihood = std::exp(cosine(views[a][i], views[b][i]) / tau) / denominator;
        sumLog += std::log(likelihood);
        sumLikelihood += likelihood;
      }
      loss += geometric ? -sumLog / double(m - 1) : -std::log(sumLikelihood / double(m - 1));
    }
  return loss / double(m * n);
}

double projectPolyView(const Views &views, double tau, bool geometric) {
  return attn::recipes::polyViewLoss(toTensor(views), tau,
                                     geometric ? PolyViewAggregation::Geometric
                                               : PolyViewAggregation::Arithmetic)
      .item<double>();
}

TEST(PolyViewLoss, TwoViewsEqualSimclrNtXent) {
  for (size_t n : {1u, 3u, 7u}) {
    auto views = randomViews(2, n, 5, 100 + unsigned(n));
    double expected = referenceNtXent(views[0], views[1], 0.3);
    auto tensor = toTensor(views);
    double ntXent = attn::recipes::ntXentLoss(tensor[0], tensor[1], 0.3).item<double>();
    EXPECT_NEAR(ntXent, expected, 1e-12) << "N = " << n;
    for (bool geometric : {true, false}) {
      double got = projectPolyView(views, 0.3, geometric);
      EXPECT_NEAR(got, expected, 1e-12) << "N = " << n << (geometric ? " geometric" : " arithmetic");
      EXPECT_NEAR(got, ntXent, 1e-13) << "N = " << n;
    }
  }
}

TEST(PolyViewLoss, MatchesDirectComputationForThreeAndFourViews) {
  unsigned seed = 1;
  for (size_t m : {3u, 4u})
    for (size_t n : {1u, 5u, 9u})
      for (double tau : {0.1, 0.5}) {
        auto views = randomViews(m, n, 6, seed++);
        for (bool geometric : {true, false})
          EXPECT_NEAR(projectPolyView(views, tau, geometric), referencePolyView(views, tau, geometric), 1e-11)
              << "M = " << m << ", N = " << n << ", tau = " << tau
              << (geometric ? " geometric" : " arithmetic");
      }
}

TEST(PolyViewLoss, AggregationsDifferForMoreThanTwoViews) {
  auto views = randomViews(3, 5, 4, 7);
  double geometric = projectPolyView(views, 0.5, true), arithmetic = projectPolyView(views, 0.5, false);
  // Jensen: −log(mean ℓ) ≤ −mean(log ℓ), strictly unless the positives' likelihoods are equal.
  EXPECT_LT(arithmetic, geometric - 1e-6);
}

TEST(PolyViewLoss, GradientMatchesFiniteDifferencesOfDirectComputation) {
  for (size_t m : {2u, 3u, 4u})
    for (bool geometric : {true, false}) {
      auto views = randomViews(m, 3, 4, 50 + unsigned(m));
      auto input = toTensor(views).requires_grad_(true);
      attn::recipes::polyViewLoss(input, 0.4, geometric ? PolyViewAggregation::Geometric
                                                        : PolyViewAggregation::Arithmetic)
          .backward();
      auto grad = input.grad().contiguous();
      const double *g = grad.data_ptr<double>();
      const double h = 1e-6;
      size_t flat = 0;
      for (size_t a = 0; a < m; ++a)
        for (size_t i = 0; i < views[a].size(); ++i)
          for (size_t k = 0; k < views[a][i].size(); ++k, ++flat) {
            auto plus = views, minus = views;
            plus[a][i][k] += h;
            minus[a][i][k] -= h;
            double numeric = (referencePolyView(plus, 0.4, geometric) - referencePolyView(minus, 0.4, geometric)) / (2 * h);
            EXPECT_NEAR(g[flat], numeric, 1e-7 * (1 + std::abs(numeric)))
                << "M = " << m << (geometric ? " geometric" : " arithmetic") << " at [" << a << "][" << i << "][" << k << "]";
          }
    }
}

TEST(MultiCropLoss, MatchesHandComputedCase) {
  const size_t m = kViews.size(), n = kViews[0].size();
  double total = 0;
  int pairs = 0;
  for (size_t a = 0; a < m; ++a)
    for (size_t b = 0; b < m; ++b) {
      if (a == b)
        continue;
      double pairLoss = 0;
      for (size_t i = 0; i < n; ++i) {
        double normaliser = 0;
        for (size_t j = 0; j < n; ++j)
          normaliser += std::exp(cosine(kViews[a][i], kViews[b][j]) / kTau);
        pairLoss += -(cosine(kViews[a][i], kViews[b][i]) / kTau - std::log(normaliser));
      }
      total += pairLoss / double(n);
      ++pairs;
    }
  EXPECT_NEAR(attn::recipes::multiCropLoss(viewsTensor(), kTau).item<double>(), total / pairs, 1e-9);
}

TEST(NtXentLoss, MatchesHandComputedCase) {
  // 2N = 4 embeddings: views 0 and 1 of kViews; each picks its partner among the other three.
  std::vector<Vec> all = {kViews[0][0], kViews[0][1], kViews[1][0], kViews[1][1]};
  double total = 0;
  for (size_t k = 0; k < 4; ++k) {
    size_t partner = (k + 2) % 4;
    double normaliser = 0;
    for (size_t j = 0; j < 4; ++j)
      if (j != k)
        normaliser += std::exp(cosine(all[k], all[j]) / kTau);
    total += -(cosine(all[k], all[partner]) / kTau - std::log(normaliser));
  }
  auto views = viewsTensor();
  EXPECT_NEAR(attn::recipes::ntXentLoss(views[0], views[1], kTau).item<double>(), total / 4, 1e-9);
}

TEST(ByolLoss, IsTwoMinusTwoCosine) {
  auto p = torch::tensor({{1.0, 0.0}, {0.0, 2.0}}, torch::kFloat64);
  auto t = torch::tensor({{1.0, 1.0}, {0.0, -1.0}}, torch::kFloat64);
  double expected = ((2 - 2 * std::sqrt(0.5)) + (2 - 2 * -1.0)) / 2;
  EXPECT_NEAR(attn::recipes::byolLoss(p, t).item<double>(), expected, 1e-12);
}

TEST(DistillationLoss, PureDistillationIsKlAndMixAddsCrossEntropy) {
  auto student = torch::tensor({{1.0, 0.0, -1.0}}, torch::kFloat64);
  auto teacher = torch::tensor({{0.0, 2.0, 0.0}}, torch::kFloat64);
  auto labels = torch::tensor({1}, torch::kInt64);
  auto softmax = [](std::vector<double> x, double tau) {
    double z = 0;
    for (double &v : x)
      z += (v = std::exp(v / tau));
    for (double &v : x)
      v /= z;
    return x;
  };
  auto klAt = [&](double tau) {
    auto pt = softmax({0.0, 2.0, 0.0}, tau), ps = softmax({1.0, 0.0, -1.0}, tau);
    double kl = 0;
    for (int c = 0; c < 3; ++c)
      kl += pt[c] * std::log(pt[c] / ps[c]);
    return kl;
  };
  EXPECT_NEAR(attn::recipes::distillationLoss(student, teacher, labels, 1.0, 1.0).item<double>(), klAt(1.0), 1e-12);
  double ce = -std::log(softmax({1.0, 0.0, -1.0}, 1.0)[1]);
  EXPECT_NEAR(attn::recipes::distillationLoss(student, teacher, labels, 2.0, 0.25).item<double>(),
              0.25 * 4.0 * klAt(2.0) + 0.75 * ce, 1e-12);
}

TEST(ErrorRates, CountsCharacterAndWordEdits) {
  EXPECT_EQ(attn::recipes::editDistance({"a", "b", "c"}, {"a", "c"}), 1);
  EXPECT_EQ(attn::recipes::editDistance({}, {"x", "y"}), 2);
  auto rates = attn::recipes::errorRates({"one tow", "nine"}, {"one two", "nine"});
  EXPECT_NEAR(rates.characterErrorRate, 2.0 / 11.0, 1e-12); // "tow" vs "two": 2 edits
  EXPECT_NEAR(rates.wordErrorRate, 1.0 / 3.0, 1e-12);
}

} // namespace
