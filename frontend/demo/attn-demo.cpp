// `make demo`: JIT-compiles attention variants (built-in names and the IR examples), runs
// them on the CPU through the torch op, and compares each with a LibTorch float64 reference.
#include "frontend/torch/Attention.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace {
using Reference = std::function<torch::Tensor(const torch::Tensor &scores)>;

struct DemoCase {
  std::string label;
  std::string variant;     // built-in name, or empty to read `exampleFile`
  std::string exampleFile; // under frontend/examples/
  int64_t heads, headDim, valueHeadDim;
  bool causal;
  torch::Dtype dtype;
  /// Maps the scaled scores [B, H, Sq, Sk] (masked entries = -inf) to probabilities.
  Reference probabilities;
  /// The function of `exampleFile` to run (empty: the file's only one).
  std::string exampleFunction = {};
  /// [Sq, Sk] bool: where the variant's mask region lets query i see key j (empty: all).
  std::function<torch::Tensor(int64_t, int64_t)> allowed = {};
  /// Per-batch key lengths passed as kv_lengths (empty: none).
  std::vector<int64_t> keyLengths = {};
};

/// The text of `func.func @name` and what follows it up to the next function.
std::string functionText(const std::string &module, const std::string &name) {
  const size_t start = module.find("func.func @" + name + "(");
  if (start == std::string::npos)
    throw std::runtime_error("no func.func @" + name + " in the example");
  return module.substr(start, module.find("\nfunc.func @", start + 1) - start);
}

std::string readFile(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

torch::Tensor elementwise(const torch::Tensor &scores,
                          const std::function<torch::Tensor(torch::Tensor)> &f) {
  auto allowed = torch::isfinite(scores);
  return torch::where(allowed, f(torch::where(allowed, scores, torch::zeros_like(scores))),
                      torch::zeros_like(scores));
}

double relativeError(const torch::Tensor &out, const torch::Tensor &reference) {
  return ((out.to(torch::kDouble) - reference).norm() / reference.norm()).item<double>();
}

template <typename F> double millis(F &&f) {
  auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}
} // namespace

int main(int argc, char **argv) {
  std::string examples = argc > 1 ? argv[1] : "frontend/examples";
  const int64_t batch = 2, queryLength = 150, keyLength = 150;
  auto softmax = [](const torch::Tensor &s) { return torch::softmax(s, -1); };
  auto sigmoidWith = [](double bias) {
    return [bias](const torch::Tensor &s) {
      return elementwise(s, [bias](torch::Tensor x) { return torch::sigmoid(x + bias); });
    };
  };
  auto reluWith = [](double scale) {
    return [scale](const torch::Tensor &s) {
      return elementwise(s, [scale](torch::Tensor x) { return torch::relu(x) * scale; });
    };
  };
  std::vector<DemoCase> cases = {
      {"softmax", "softmax", "", 4, 64, 64, false, torch::kFloat32, softmax},
      {"softmax causal bf16", "softmax", "", 4, 64, 64, true, torch::kBFloat16, softmax},
      {"sigmoid (b=-ln n)", "sigmoid", "", 4, 64, 64, false, torch::kFloat32,
       sigmoidWith(-std::log(double(keyLength)))},
      {"sigmoid(bias=-3.5)", "sigmoid(bias=-3.5)", "", 4, 128, 128, true, torch::kFloat16,
       sigmoidWith(-3.5)},
      {"relu (1/n)", "relu", "", 4, 80, 80, false, torch::kFloat32, reluWith(1.0 / keyLength)},
      {"custom.mlir", "", "custom.mlir", 4, 64, 32, false, torch::kFloat32,
       [](const torch::Tensor &s) {
         return elementwise(s, [](torch::Tensor x) {
           return 0.5 * (1 + torch::tanh(x)) * torch::exp(-0.1 * x * x);
         });
       }},
      {"alibi.mlir", "", "alibi.mlir", 8, 64, 64, true, torch::kFloat16,
       [](const torch::Tensor &s) {
         auto heads = torch::arange(1, 9, torch::kDouble).view({1, 8, 1, 1});
         auto slopes = torch::pow(2.0, -heads);
         auto rows = torch::arange(s.size(2), torch::kDouble).view({1, 1, -1, 1});
         auto cols = torch::arange(s.size(3), torch::kDouble).view({1, 1, 1, -1});
         return torch::softmax(s - slopes * (rows - cols), -1);
       }},
      // A mask region: the kernels skip the key blocks it empties.
      {"masks.mlir prefix-LM", "", "masks.mlir", 4, 64, 64, false, torch::kFloat32, softmax,
       "prefix_lm",
       [](int64_t queries, int64_t keys) {
         auto rows = torch::arange(queries).view({-1, 1});
         auto cols = torch::arange(keys).view({1, -1});
         return (cols < 64).logical_or(cols <= rows);
       }},
      // A ragged batch in one call: batch 1 has 97 keys, the rest is padding.
      {"sigmoid kv_lengths", "sigmoid", "", 4, 64, 64, false, torch::kFloat32,
       [](const torch::Tensor &s) {
         // -ln n of each batch's own length: 150 and 97.
         auto bias = -torch::log(torch::tensor({150.0, 97.0}, torch::kDouble)).view({2, 1, 1, 1});
         return elementwise(s, [&](torch::Tensor x) { return torch::sigmoid(x + bias); });
       },
       "", {}, {150, 97}},
  };

  std::printf("attn demo: %lld x H x %lld x D attention on the CPU, JIT-compiled from IR, "
              "vs LibTorch float64\n\n",
              static_cast<long long>(batch), static_cast<long long>(queryLength));
  std::printf("%-22s %-6s %5s %8s %12s %10s %12s\n", "variant", "dtype", "D", "causal",
              "compile ms", "run ms", "rel. error");
  int failures = 0;
  torch::manual_seed(2026);
  for (const DemoCase &c : cases) {
    std::string variant = c.variant;
    if (variant.empty()) {
      std::string module = readFile(examples + "/" + c.exampleFile);
      variant = "mlir:" + (c.exampleFunction.empty() ? module
                                                     : functionText(module, c.exampleFunction));
    }
    auto options = torch::TensorOptions().dtype(torch::kDouble);
    auto q = torch::randn({batch, c.heads, queryLength, c.headDim}, options);
    auto k = torch::randn({batch, c.heads, keyLength, c.headDim}, options);
    auto v = torch::randn({batch, c.heads, keyLength, c.valueHeadDim}, options);
    attn::AttentionOptions attentionOptions{variant, std::nullopt, c.causal};
    if (!c.keyLengths.empty())
      attentionOptions.kvLengths = torch::tensor(c.keyLengths);

    torch::Tensor out;
    auto qIn = q.to(c.dtype), kIn = k.to(c.dtype), vIn = v.to(c.dtype);
    double compileMs = millis([&] { out = attn::attention(qIn, kIn, vIn, attentionOptions); });
    double runMs = millis([&] { out = attn::attention(qIn, kIn, vIn, attentionOptions); });

    // Reference from the inputs as the kernel saw them (rounded to the input dtype).
    auto qRef = qIn.to(torch::kDouble), kRef = kIn.to(torch::kDouble),
         vRef = vIn.to(torch::kDouble);
    auto scores = torch::matmul(qRef, kRef.transpose(-2, -1)) / std::sqrt(double(c.headDim));
    if (c.causal) {
      auto mask = torch::ones({queryLength, keyLength}, torch::kBool).triu(1);
      scores = scores.masked_fill(mask, -INFINITY);
    }
    if (c.allowed)
      scores = scores.masked_fill(c.allowed(queryLength, keyLength).logical_not(), -INFINITY);
    if (!c.keyLengths.empty()) {
      auto lengths = torch::tensor(c.keyLengths).view({-1, 1, 1, 1});
      auto padding = torch::arange(keyLength).view({1, 1, 1, -1}) >= lengths;
      scores = scores.masked_fill(padding, -INFINITY);
    }
    auto reference = torch::matmul(c.probabilities(scores), vRef);
    double error = relativeError(out, reference);
    double tolerance = c.dtype == torch::kFloat32 ? 1e-5 : 1e-2;
    bool ok = error < tolerance;
    failures += !ok;
    std::printf("%-22s %-6s %5lld %8s %12.1f %10.2f %12.2e %s\n", c.label.c_str(),
                c.dtype == torch::kFloat32 ? "f32" : (c.dtype == torch::kBFloat16 ? "bf16" : "f16"),
                static_cast<long long>(c.headDim), c.causal ? "yes" : "no", compileMs, runMs, error,
                ok ? "ok" : "FAIL");
  }
  std::printf(
      "\ncompile ms = first call: IR -> tiled kernels -> LLVM -> object -> ORC, or about 3 ms "
      "when the disk cache\n(ATTN_CACHE_DIR, default ~/.cache/attn) already holds the "
      "variant from an earlier run; run ms = second call (memory hit)\n");
  return failures == 0 ? 0 : 1;
}
