// The one parser of normalizer names: shorthand → attribute, decided by the attribute's own
// parser and verifier, with errors that name what is known.
#include "dialects/attn/NormalizerShorthand.h"

#include "mlir/IR/MLIRContext.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

using namespace mlir;
using namespace mlir::attn;
using testing::HasSubstr;

namespace {
class NormalizerShorthandTest : public ::testing::Test {
protected:
  NormalizerShorthandTest() { context.loadDialect<AttnDialect>(); }

  Attribute parse(StringRef text) {
    std::string error;
    auto normalizer = parseNormalizerShorthand(text, &context, error);
    EXPECT_TRUE(succeeded(normalizer)) << text.str() << ": " << error;
    return succeeded(normalizer) ? Attribute(*normalizer) : Attribute();
  }

  std::string errorOf(StringRef text) {
    std::string error;
    auto normalizer = parseNormalizerShorthand(text, &context, error);
    EXPECT_TRUE(failed(normalizer)) << text.str() << " parsed";
    return error;
  }

  MLIRContext context;
};

TEST_F(NormalizerShorthandTest, NamesAndParametersBecomeTheAttribute) {
  EXPECT_TRUE(isa<SoftmaxAttr>(parse("softmax")));
  EXPECT_TRUE(isa<SoftmaxAttr>(parse("  softmax ( )  ")));
  auto sigmoid = dyn_cast_or_null<SigmoidAttr>(parse("sigmoid(bias=-2)"));
  ASSERT_TRUE(sigmoid);
  EXPECT_DOUBLE_EQ(sigmoid.getBias().getValueAsDouble(), -2.0);
  // Numbers as Python writes them: exponent without '.', leading '.', leading '+'.
  for (auto [text, value] : {std::pair<const char *, double>{"relu(scale=1e-3)", 1e-3},
                             {"relu( scale = .5 )", 0.5},
                             {"relu(scale=+2.0)", 2.0},
                             {"relu(scale=3)", 3.0}}) {
    auto relu = dyn_cast_or_null<ReluAttr>(parse(text));
    ASSERT_TRUE(relu) << text;
    EXPECT_DOUBLE_EQ(relu.getScale().getValueAsDouble(), value) << text;
  }
  EXPECT_TRUE(isa<SigmoidAttr>(parse("sigmoid")));
  // The attribute syntax is accepted as it is.
  EXPECT_EQ(parse("#attn.sigmoid<bias = -2.0>"), Attribute(sigmoid));
}

TEST_F(NormalizerShorthandTest, ShorthandSplitsKeepOrderAndText) {
  std::string error;
  auto split = splitNormalizerShorthand("future(a=1, b = x2 ,c=-0.5)", error);
  ASSERT_TRUE(succeeded(split)) << error;
  EXPECT_EQ(split->name, "future");
  ASSERT_EQ(split->parameters.size(), 3u);
  EXPECT_EQ(split->parameters[1], std::make_pair(std::string("b"), std::string("x2")));
  EXPECT_EQ(split->parameters[2].second, "-0.5");
}

TEST_F(NormalizerShorthandTest, ErrorsNameWhatIsKnown) {
  std::string typo = errorOf("sigmiod");
  EXPECT_THAT(typo, HasSubstr("unknown normalizer 'sigmiod' (did you mean 'sigmoid'?)"));
  EXPECT_THAT(typo, HasSubstr("softmax, softmax1, sigmoid, relu"));
  EXPECT_THAT(errorOf("relu(bias=1)"), HasSubstr("no parameter 'bias'; the parameter is 'scale'"));
  EXPECT_THAT(errorOf("relu(scale=-1)"), HasSubstr("relu scale must be positive"));
  EXPECT_THAT(errorOf("sigmoid(bias=low)"), HasSubstr("not a valid normalizer"));
  EXPECT_THAT(errorOf("sigmoid(bias=1, bias=2)"), HasSubstr("'bias' is given twice"));
  EXPECT_THAT(errorOf("sigmoid(bias=)"), HasSubstr("expected 'key=value'"));
  EXPECT_THAT(errorOf("sigmoid(bias=1"), HasSubstr("expected '(key=value, ...)'"));
  EXPECT_THAT(errorOf("sigmoid(bias=1, scale=2)"), HasSubstr("not a valid normalizer"));
  EXPECT_THAT(errorOf("custom"), HasSubstr("normalizer_body region: write the variant as mlir:"));
  EXPECT_THAT(errorOf(""), HasSubstr("expected a normalizer name"));
  EXPECT_THAT(errorOf("#attn.sigmoid<bias = 1.0> trailing"), HasSubstr("unexpected text"));
  EXPECT_THAT(errorOf("#builtin.unit"), HasSubstr("not"));
}

TEST_F(NormalizerShorthandTest, EveryNamedNormalizerParsesByItsName) {
  SmallVector<std::string> names = namedNormalizers(&context);
  EXPECT_THAT(names, testing::IsSupersetOf({"softmax", "sigmoid", "relu"}));
  EXPECT_THAT(names, testing::Not(testing::Contains("custom")));
  for (const std::string &name : names)
    EXPECT_TRUE(parse(name)) << name;
}
} // namespace
