// ReLU attention, relu(s) / Sk, over a sliding window of 256 keys.
func.func @relu_window(%q: tensor<2x8x4096x64xbf16>, %k: tensor<2x8x4096x64xbf16>,
                       %v: tensor<2x8x4096x64xbf16>) -> tensor<2x8x4096x64xbf16> {
  %o = attn.attention %q, %k, %v normalizer(#attn.relu) {causal, window = 256}
      : tensor<2x8x4096x64xbf16>, tensor<2x8x4096x64xbf16>, tensor<2x8x4096x64xbf16> -> tensor<2x8x4096x64xbf16>
  return %o : tensor<2x8x4096x64xbf16>
}
