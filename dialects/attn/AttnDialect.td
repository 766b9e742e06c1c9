#ifndef ATTN_DIALECT_TD
#define ATTN_DIALECT_TD

include "mlir/IR/OpBase.td"

def Attn_Dialect : Dialect {
  let name = "attn";
  let cppNamespace = "::mlir::attn";
  let summary = "Attention with pluggable normalizers and sigma-reparameterized linears";
  let description = [{
    Tensor-level attention. `attn.attention` carries its normalizer as an attribute
    implementing `NormalizerAttrInterface`; passes ask that interface how to emit the
    probabilities and whether running row statistics are needed, and never switch on
    normalizer names.
  }];
  let useDefaultAttributePrinterParser = 1;
  // tensor and memref: the scalar regions read captured tensors (tensor.extract, and
  // memref.load in the tile ops).
  // ub: the dialect's canonicalization turns a dimension read at a negative index into
  // ub.poison (AttnCanonicalize.cpp).
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
                           "::mlir::tensor::TensorDialect", "::mlir::memref::MemRefDialect",
                           "::mlir::ub::UBDialect"];
  let hasCanonicalizer = 1;
}

#endif // ATTN_DIALECT_TD
