// README invariant 2: kernels specialize on head dim, normalizer, mask kind and target,
// never on batch, heads or sequence lengths. Counted through the JIT's statistics.
#include "frontend/torch/Attention.h"
#include "runtime/Jit.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace {
TEST(AttentionRecompile, NewBatchHeadsAndLengthsReuseTheKernels) {
  attn::AttentionOptions options;
  options.variant = "sigmoid(bias=-1.25)"; // a variant no other test uses
  auto &jit = attn::runtime::Jit::instance();
  // Another test's optimized tier finishing on the background thread meanwhile would count.
  jit.waitForBackgroundCompiles();
  const uint64_t before = jit.statistics().compiles + jit.statistics().diskHits;
  struct Shape {
    int64_t batch, heads, kvHeads, queries, keys;
  };
  for (Shape shape : {Shape{1, 2, 2, 17, 17}, Shape{3, 4, 2, 65, 33}, Shape{2, 8, 1, 1, 129},
                      Shape{5, 1, 1, 200, 7}}) {
    torch::Tensor q =
        torch::randn({shape.batch, shape.heads, shape.queries, 32}, torch::requires_grad());
    torch::Tensor k =
        torch::randn({shape.batch, shape.kvHeads, shape.keys, 32}, torch::requires_grad());
    torch::Tensor v =
        torch::randn({shape.batch, shape.kvHeads, shape.keys, 32}, torch::requires_grad());
    attn::attention(q, k, v, options).sum().backward();
  }
  jit.waitForBackgroundCompiles();
  const uint64_t after = jit.statistics().compiles + jit.statistics().diskHits;
  // One variant is three artifacts (forward, dQ, dK/dV), each built or read once.
  EXPECT_EQ(after - before, 3u) << "changing B, H or S built the variant again";
}
} // namespace
