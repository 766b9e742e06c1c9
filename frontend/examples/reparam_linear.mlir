// A sigma-reparameterized QKV projection in training mode: returns y and the updated u.
func.func @reparam_qkv(%x: tensor<8x197x768xf32>, %w: tensor<2304x768xf32>, %b: tensor<2304xf32>,
                       %gamma: tensor<f32>, %u: tensor<768xf32>) -> (tensor<8x197x2304xf32>, tensor<768xf32>) {
  %y, %u_next = attn.reparam_linear %x, %w bias(%b : tensor<2304xf32>) gamma(%gamma : tensor<f32>)
      u(%u : tensor<768xf32>) {training}
      : tensor<8x197x768xf32>, tensor<2304x768xf32> -> tensor<8x197x2304xf32>, tensor<768xf32>
  return %y, %u_next : tensor<8x197x2304xf32>, tensor<768xf32>
}
