#include "models/AttentionVariant.h"

#include "frontend/torch/Attention.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <iomanip>
#include <sstream>

namespace attn::models {
namespace {

/// An MLIR float literal (MLIR requires a '.' before any exponent).
std::string floatLiteral(double value) {
  std::ostringstream text;
  text << std::scientific << std::setprecision(9) << value;
  return text.str();
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
  const NormalizerInfo info = normalizer_info(normalizer);
  spec.attribute = info.attribute;
  // The Reference backend evaluates the built-ins itself and needs their one parameter; the
  // attribute syntax (`#attn.sigmoid<...>`) gives no parameter list, so it counts as Named.
  const bool shorthand = normalizer.find('#') == std::string::npos;
  const bool oneOrNoParameter = info.parameters.size() <= 1;
  if (info.name == "softmax" && info.parameters.empty()) {
    spec.kind = NormalizerSpec::Kind::Softmax;
  } else if (info.name == "sigmoid" && shorthand && oneOrNoParameter) {
    spec.kind = NormalizerSpec::Kind::Sigmoid;
  } else if (info.name == "relu" && shorthand && oneOrNoParameter) {
    spec.kind = NormalizerSpec::Kind::Relu;
  } else {
    spec.kind = NormalizerSpec::Kind::Named;
  }
  if (spec.kind != NormalizerSpec::Kind::Named && !info.parameters.empty())
    spec.parameter = std::stod(info.parameters.front().second);
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
  if (window == 0 && !alibi)
    return normalizer; // validated above; attn::attention parses it with the same parser
  TORCH_CHECK(spec.kind != NormalizerSpec::Kind::Ir,
              "attention: a window or ALiBi cannot be added to a normalizer given as IR; write "
              "`window = W` or the score_mod into that IR instead");
  std::ostringstream type, text;
  type << "tensor<?x?x?x" << head_dim << "xf32>";
  const std::string t = type.str();
  text << "mlir:func.func @attention(%q: " << t << ", %k: " << t << ", %v: " << t << ") -> " << t
       << " {\n"
       << "  %o = attn.attention %q, %k, %v normalizer(" << spec.attribute << ")";
  if (window > 0)
    text << " {window = " << window << "}";
  text << "\n      : " << t << ", " << t << ", " << t << " -> " << t << "\n";
  if (alibi)
    text << alibiScoreMod(num_heads);
  text << "  return %o : " << t << "\n}\n";
  return text.str();
}

} // namespace attn::models
