// attn-opt: mlir-opt with the attn dialect, our passes and the upstream ones we lower through.
#include "dialects/attn/AttnDialect.h"
#include "codegen/CpuPipeline.h"
#include "codegen/GpuPipeline.h"
#include "passes/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllPasses();
  registry.insert<mlir::attn::AttnDialect>();
  attn::codegen::registerGpuDialects(registry);
  mlir::attn::registerAttnPasses();
  attn::codegen::registerCpuPipelines();
  attn::codegen::registerGpuPipelines();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "attn optimizer driver\n", registry));
}
