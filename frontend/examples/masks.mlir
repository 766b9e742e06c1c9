// Masks written as a `mask` region: true where query q may see key k. The kernels classify each
// (query tile, key block) by the region first and skip the blocks it empties, so a sparse mask
// costs only the blocks it keeps. The static sizes written here are an example.

// Documents of 256 tokens packed into one sequence: a query sees its own document only.
func.func @document_mask(%q: tensor<1x8x4096x64xf32>, %k: tensor<1x8x4096x64xf32>,
                         %v: tensor<1x8x4096x64xf32>) -> tensor<1x8x4096x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax)
      : tensor<1x8x4096x64xf32>, tensor<1x8x4096x64xf32>, tensor<1x8x4096x64xf32> -> tensor<1x8x4096x64xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %length = arith.constant 256 : index
    %di = arith.divsi %i, %length : index
    %dj = arith.divsi %j, %length : index
    %same = arith.cmpi eq, %di, %dj : index
    attn.yield %same : i1
  }
  return %o : tensor<1x8x4096x64xf32>
}

// Prefix-LM: the first 64 tokens (the prefix) are visible to every query, the rest causally.
func.func @prefix_lm(%q: tensor<2x4x1024x64xf32>, %k: tensor<2x4x1024x64xf32>,
                     %v: tensor<2x4x1024x64xf32>) -> tensor<2x4x1024x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax)
      : tensor<2x4x1024x64xf32>, tensor<2x4x1024x64xf32>, tensor<2x4x1024x64xf32> -> tensor<2x4x1024x64xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %prefix = arith.constant 64 : index
    %in_prefix = arith.cmpi slt, %j, %prefix : index
    %past = arith.cmpi sle, %j, %i : index
    %keep = arith.ori %in_prefix, %past : i1
    attn.yield %keep : i1
  }
  return %o : tensor<2x4x1024x64xf32>
}

// Neighbourhood attention (NATTEN) on a 32 x 32 token grid, row-major: a query sees the keys
// within 3 rows and 3 columns of it (a 7 x 7 window), here with sigmoid attention.
func.func @natten_2d(%q: tensor<1x4x1024x32xf32>, %k: tensor<1x4x1024x32xf32>,
                     %v: tensor<1x4x1024x32xf32>) -> tensor<1x4x1024x32xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.sigmoid)
      : tensor<1x4x1024x32xf32>, tensor<1x4x1024x32xf32>, tensor<1x4x1024x32xf32> -> tensor<1x4x1024x32xf32>
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %width = arith.constant 32 : index
    %reach = arith.constant 3 : index
    %ri = arith.divsi %i, %width : index
    %rj = arith.divsi %j, %width : index
    %ci = arith.remsi %i, %width : index
    %cj = arith.remsi %j, %width : index
    %dr = arith.subi %ri, %rj : index
    %dc = arith.subi %ci, %cj : index
    %zero = arith.constant 0 : index
    %ndr = arith.subi %zero, %dr : index
    %ndc = arith.subi %zero, %dc : index
    %adr = arith.maxsi %dr, %ndr : index
    %adc = arith.maxsi %dc, %ndc : index
    %near_row = arith.cmpi sle, %adr, %reach : index
    %near_col = arith.cmpi sle, %adc, %reach : index
    %keep = arith.andi %near_row, %near_col : i1
    attn.yield %keep : i1
  }
  return %o : tensor<1x4x1024x32xf32>
}
