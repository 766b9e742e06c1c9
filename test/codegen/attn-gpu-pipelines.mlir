// RUN: attn-opt %s --attn-sm80-pipeline="head-dim=64 backward=false" | FileCheck %s --check-prefix=SM80
// RUN: attn-opt %s --attn-sm90a-pipeline="head-dim=64 element-type=f16" | FileCheck %s --check-prefix=SM90

// The named pipelines end in gpu-module-to-binary{format=isa}: a gpu.binary whose object is the
// PTX of the kernels.
// SM80: gpu.binary @softmax_kernels  [#gpu.object<#nvvm.target<O = 3, chip = "sm_80", features = "+ptx80">
// SM80-SAME: .entry softmax_fwd(
// SM80-SAME: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// SM80-NOT: softmax_bwd_dq
// SM90: gpu.binary @softmax_kernels  [#gpu.object<#nvvm.target<O = 3, chip = "sm_90a", features = "+ptx80">
// SM90-SAME: .entry softmax_bwd_dq(
// SM90-SAME: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
func.func @softmax(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  %o = attn.attention %q, %k, %v normalizer(#attn.softmax) {causal}
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  return %o : tensor<?x?x?x64xf32>
}
