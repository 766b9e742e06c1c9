#include "models/AttentionVariant.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <iomanip>
#include <regex>
#include <sstream>

namespace attn::models {
namespace {

constexpr const char *kAcceptedNormalizers =
    "softmax, sigmoid, sigmoid(bias=<float>), relu, relu(scale=<float>) or mlir:<module text>";

/// An MLIR float literal (MLIR requires a '.' before any exponent).
std::string floatLiteral(double value) {
  std::ostringstream text;
  text << std::scientific << std::setprecision(9) << value;
  return text.str();
}

std::string normalizerAttribute(const NormalizerSpec &spec) {
  switch (spec.kind) {
  case NormalizerSpec::Kind::Softmax:
    return "#attn.softmax";
  case NormalizerSpec::Kind::Sigmoid:
    return spec.parameter ? "#attn.sigmoid<bias = " + floatLiteral(*spec.parameter) + ">"
                          : "#attn.sigmoid";
  case NormalizerSpec::Kind::Relu:
    return spec.parameter ? "#attn.relu<scale = " + floatLiteral(*spec.parameter) + ">"
                          : "#attn.relu";
  case NormalizerSpec::Kind::Ir:
    break;
  }
  TORCH_INTERNAL_ASSERT(false, "IR normalizers have no attribute form");
}

/// score − slope_h·|i − j| with slope_h = exp2(−8(h+1)/H): ALiBi's symmetric form, which for
/// causal attention (j ≤ i) equals the original slope·(j − i).
std::string alibiScoreMod(int64_t numHeads) {
  std::ostringstream body;
  body << "  score_mod {\n"
       << "  ^bb0(%s: f32, %b: index, %h: index, %qi: index, %ki: index):\n"
       << "    %one = arith.constant 1.000000000e+00 : f32\n"
       << "    %step = arith.constant " << floatLiteral(-8.0 / static_cast<double>(numHeads))
       << " : f32\n"
       << "    %hi = arith.index_cast %h : index to i32\n"
       << "    %hf = arith.sitofp %hi : i32 to f32\n"
       << "    %h1 = arith.addf %hf, %one : f32\n"
       << "    %exponent = arith.mulf %h1, %step : f32\n"
       << "    %slope = math.exp2 %exponent : f32\n"
       << "    %delta = arith.subi %qi, %ki : index\n"
       << "    %deltai = arith.index_cast %delta : index to i32\n"
       << "    %deltaf = arith.sitofp %deltai : i32 to f32\n"
       << "    %distance = math.absf %deltaf : f32\n"
       << "    %penalty = arith.mulf %slope, %distance : f32\n"
       << "    %r = arith.subf %s, %penalty : f32\n"
       << "    attn.yield %r : f32\n"
       << "  }\n";
  return body.str();
}

} // namespace

NormalizerSpec parse_normalizer(const std::string &normalizer) {
  NormalizerSpec spec;
  static const std::string kIrPrefix = "mlir:";
  if (normalizer.rfind(kIrPrefix, 0) == 0) {
    spec.kind = NormalizerSpec::Kind::Ir;
    spec.ir = normalizer.substr(kIrPrefix.size());
    return spec;
  }
  static const std::regex pattern(
      R"(^\s*(softmax|sigmoid|relu)\s*(?:\(\s*(bias|scale)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\))?\s*$)");
  std::smatch match;
  TORCH_CHECK(std::regex_match(normalizer, match, pattern), "attention normalizer '", normalizer,
              "' is not one of ", kAcceptedNormalizers);
  const std::string name = match[1], parameter = match[2];
  spec.kind = name == "softmax"   ? NormalizerSpec::Kind::Softmax
              : name == "sigmoid" ? NormalizerSpec::Kind::Sigmoid
                                  : NormalizerSpec::Kind::Relu;
  if (!parameter.empty()) {
    const bool fits = (name == "sigmoid" && parameter == "bias") ||
                      (name == "relu" && parameter == "scale");
    TORCH_CHECK(fits, "attention normalizer '", normalizer, "': ", name, " takes no '", parameter,
                "' parameter; expected ", kAcceptedNormalizers);
    spec.parameter = std::stod(match[3]);
  }
  return spec;
}

at::Tensor alibi_slopes(int64_t num_heads) {
  TORCH_CHECK(num_heads > 0, "alibi_slopes: num_heads must be positive, got ", num_heads);
  const at::Tensor heads = at::arange(1, num_heads + 1, at::kDouble);
  return at::exp2(heads * (-8.0 / static_cast<double>(num_heads)));
}

std::string attention_variant(const std::string &normalizer, int64_t head_dim, int64_t num_heads,
                              int64_t window, bool alibi) {
  const NormalizerSpec spec = parse_normalizer(normalizer);
  TORCH_CHECK(window >= 0, "attention window must be >= 0 (0 = none), got ", window);
  if (window == 0 && !alibi) {
    // Parameters are re-printed with a '.', which the op's IR parser requires ("-2" fails).
    switch (spec.kind) {
    case NormalizerSpec::Kind::Sigmoid:
      return spec.parameter ? "sigmoid(bias=" + floatLiteral(*spec.parameter) + ")" : "sigmoid";
    case NormalizerSpec::Kind::Relu:
      return spec.parameter ? "relu(scale=" + floatLiteral(*spec.parameter) + ")" : "relu";
    case NormalizerSpec::Kind::Softmax:
      return "softmax";
    case NormalizerSpec::Kind::Ir:
      return normalizer;
    }
  }
  TORCH_CHECK(spec.kind != NormalizerSpec::Kind::Ir,
              "attention: a window or ALiBi cannot be added to a normalizer given as IR; write "
              "`window = W` or the score_mod into that IR instead");
  std::ostringstream type, text;
  type << "tensor<?x?x?x" << head_dim << "xf32>";
  const std::string t = type.str();
  text << "mlir:func.func @attention(%q: " << t << ", %k: " << t << ", %v: " << t << ") -> " << t
       << " {\n"
       << "  %o = attn.attention %q, %k, %v normalizer(" << normalizerAttribute(spec) << ")";
  if (window > 0)
    text << " {window = " << window << "}";
  text << "\n      : " << t << ", " << t << ", " << t << " -> " << t << "\n";
  if (alibi)
    text << alibiScoreMod(num_heads);
  text << "  return %o : " << t << "\n}\n";
  return text.str();
}

} // namespace attn::models
