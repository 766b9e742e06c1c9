// The recipes' objectives against hand-computed values (plain double arithmetic, no torch ops).
#include "models/recipes/Losses.h"

#include <gtest/gtest.h>

#include <cmath>
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

double handPolyView(bool geometric) {
  const size_t m = kViews.size(), n = kViews[0].size();
  double total = 0;
  for (size_t a = 0; a < m; ++a)
    for (size_t i = 0; i < n; ++i) {
      std::vector<double> g(n);
      for (size_t j = 0; j < n; ++j) {
        double sum = 0;
        for (size_t b = 0; b < m; ++b) {
          if (b == a)
            continue;
          double s = cosine(kViews[a][i], kViews[b][j]) / kTau;
          sum += geometric ? s : std::exp(s);
        }
        g[j] = geometric ? sum / double(m - 1) : std::log(sum / double(m - 1));
      }
      double normaliser = 0;
      for (double x : g)
        normaliser += std::exp(x);
      total += -(g[i] - std::log(normaliser));
    }
  return total / double(m * n);
}

TEST(PolyViewLoss, GeometricMatchesHandComputedCase) {
  double got = attn::recipes::polyViewLoss(viewsTensor(), kTau, PolyViewAggregation::Geometric).item<double>();
  EXPECT_NEAR(got, handPolyView(true), 1e-9);
}

TEST(PolyViewLoss, ArithmeticMatchesHandComputedCase) {
  double got = attn::recipes::polyViewLoss(viewsTensor(), kTau, PolyViewAggregation::Arithmetic).item<double>();
  EXPECT_NEAR(got, handPolyView(false), 1e-9);
}

TEST(PolyViewLoss, AggregationsDifferAndAgreeForTwoViews) {
  auto views = viewsTensor();
  double geometric = attn::recipes::polyViewLoss(views, kTau, PolyViewAggregation::Geometric).item<double>();
  double arithmetic = attn::recipes::polyViewLoss(views, kTau, PolyViewAggregation::Arithmetic).item<double>();
  EXPECT_GT(std::abs(geometric - arithmetic), 1e-3);
  // With one other view both means are that view's score.
  auto two = views.slice(0, 0, 2);
  EXPECT_NEAR(attn::recipes::polyViewLoss(two, kTau, PolyViewAggregation::Geometric).item<double>(),
              attn::recipes::polyViewLoss(two, kTau, PolyViewAggregation::Arithmetic).item<double>(), 1e-12);
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
