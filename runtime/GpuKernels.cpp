#include "runtime/GpuKernels.h"

#include "codegen/CpuPipeline.h"
#include "codegen/GpuCompiler.h"
#include "runtime/CaptureBinder.h"
#include "runtime/CudaDriver.h"
#include "runtime/Jit.h"
#include "runtime/Log.h"
#include "runtime/VariantSource.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <vector>

namespace attn::runtime {
namespace {
using codegen::GpuKernelInfo;
using codegen::GpuProgram;

/// The disk-cache payload: the launch contract, then the PTX.
std::string serialize(const GpuProgram &program) {
  std::ostringstream text;
  text << "attn-gpu-program 1\nrow_wise " << program.rowWise << "\nkernels "
       << program.kernels.size() << "\n";
  for (const GpuKernelInfo &kernel : program.kernels)
    text << kernel.name << " " << kernel.grid << " " << kernel.blockRows << " " << kernel.threads
         << " " << kernel.dynamicSharedBytes << "\n";
  text << "ptx " << program.ptx.size() << "\n" << program.ptx;
  return text.str();
}

GpuProgram deserialize(const std::string &bytes) {
  std::istringstream text(bytes);
  std::string word;
  int version = 0;
  size_t count = 0, ptxBytes = 0;
  GpuProgram program;
  text >> word >> version;
  if (word != "attn-gpu-program" || version != 1)
    throw CompileError("GPU kernel cache entry has an unknown format");
  text >> word >> program.rowWise >> word >> count;
  for (size_t i = 0; i < count; ++i) {
    GpuKernelInfo kernel;
    text >> kernel.name >> kernel.grid >> kernel.blockRows >> kernel.threads >>
        kernel.dynamicSharedBytes;
    program.kernels.push_back(kernel);
  }
  text >> word >> ptxBytes;
  text.get(); // the newline
  program.ptx.resize(ptxBytes);
  text.read(program.ptx.data(), static_cast<std::streamsize>(ptxBytes));
  if (!text || word != "ptx")
    throw CompileError("GPU kernel cache entry is malformed");
  return program;
}

/// One kernel argument list in MLIR's expanded memref convention: allocated and aligned
/// pointers, offset, sizes, strides — each passed by address to cuLaunchKernel.
class ArgumentList {
public:
  template <int Rank> void addMemRef(const DeviceView<Rank> &view) {
    pointers_.push_back(view.data);
    pointers_.push_back(view.data);
    integers_.push_back(0);
    for (int i = 0; i < Rank; ++i)
      integers_.push_back(view.sizes[i]);
    for (int i = 0; i < Rank; ++i)
      integers_.push_back(view.strides[i]);
    layout_.push_back(Rank);
  }

  /// Parameters laid out elsewhere (the captures' descriptor words), passed after the views.
  void addParameters(const std::vector<void *> &addresses) {
    trailing_.insert(trailing_.end(), addresses.begin(), addresses.end());
  }

  /// Addresses of every scalar, in order. Valid while this list lives.
  std::vector<void *> addresses() {
    std::vector<void *> addresses;
    size_t pointer = 0, integer = 0;
    for (int rank : layout_) {
      addresses.push_back(&pointers_[pointer++]);
      addresses.push_back(&pointers_[pointer++]);
      for (int i = 0; i < 1 + 2 * rank; ++i)
        addresses.push_back(&integers_[integer++]);
    }
    addresses.insert(addresses.end(), trailing_.begin(), trailing_.end());
    return addresses;
  }

private:
  std::vector<void *> pointers_;
  std::vector<int64_t> integers_;
  std::vector<int> layout_;
  std::vector<void *> trailing_;
};

/// The parameters `.entry <name>(...)` declares in `ptx`; -1 when the entry is not found.
int64_t ptxParameterCount(const std::string &ptx, const std::string &name) {
  const size_t entry = ptx.find(".entry " + name + "(");
  if (entry == std::string::npos)
    return -1;
  const size_t end = ptx.find(')', entry);
  int64_t count = 0;
  for (size_t at = ptx.find(".param", entry); at < end; at = ptx.find(".param", at + 6))
    ++count;
  return count;
}

/// A call's captures bound for the kernels, with their device fault flags.
struct BoundCaptures {
  CaptureArguments arguments;
  void *flags = nullptr;
};

std::string shortLabel(const VariantSpec &spec, GpuDtype dtype) {
  std::string variant =
      spec.variant.size() > 60 ? spec.variant.substr(0, 60) + "..." : spec.variant;
  return "variant '" + variant + "' D=" + std::to_string(spec.headDim) +
         " Dv=" + std::to_string(spec.valueHeadDim) + (spec.causal ? " causal " : " ") +
         gpuDtypeName(dtype);
}

class LoadedGpuKernels final : public GpuKernels {
public:
  LoadedGpuKernels(int device, GpuProgram program, std::string target, double millis,
                   const std::string &label, bool keyLengths, VariantCaptures captures,
                   bool captureGradients)
      : device_(device), program_(std::move(program)), target_(std::move(target)),
        compileMillis_(millis), keyLengths_(keyLengths),
        captureGradients_(captureGradients), captures_(std::move(captures)), label_(label) {
    cuda::Driver &driver = cuda::Driver::get();
    driver.makeCurrent(device_);
    cuda::ModuleHandle module = driver.loadModule(program_.ptx);
    for (const GpuKernelInfo &kernel : program_.kernels) {
      cuda::FunctionHandle function = driver.function(module, kernel.name);
      // Above 48 KB a kernel must opt in to its dynamic shared memory.
      if (kernel.dynamicSharedBytes > 48 * 1024)
        driver.setMaxDynamicSharedBytes(function, static_cast<int>(kernel.dynamicSharedBytes));
      cuda::KernelResources resources = driver.resources(function);
      std::string line = kernel.name + " (" + label + ", " + target_ +
                         "): " + std::to_string(resources.registers) + " registers, " +
                         std::to_string(resources.localBytes) + " B local, " +
                         std::to_string(resources.staticSharedBytes) + " B static + " +
                         std::to_string(kernel.dynamicSharedBytes) + " B dynamic shared, " +
                         std::to_string(kernel.threads) + " threads";
      log(resources.localBytes > 0 ? LogLevel::Warning : LogLevel::Info,
          resources.localBytes > 0 ? "kernel spills to local memory: " + line : line);
      functions_[suffixOf(kernel.name)] = {function, kernel,
                                           ptxParameterCount(program_.ptx, kernel.name)};
    }
  }

  bool rowWise() const override { return program_.rowWise; }
  double compileMillis() const override { return compileMillis_; }
  const std::string &target() const override { return target_; }
  int64_t blockRows(const std::string &role) const override {
    auto found = functions_.find(role);
    return found == functions_.end() ? 0 : found->second.info.blockRows;
  }
  const std::vector<CaptureDeclaration> &captures() const override {
    return captures_.declarations;
  }
  size_t captureScratchBytes() const override {
    // One int32 flag per kernel capture, and at least 8 bytes: an empty capture's descriptor
    // points here for the kernels' in-bounds fallback read (of up to an i64).
    const size_t flags = captures_.callIndex.size();
    return flags == 0 ? 0 : std::max<size_t>(8, (4 * flags + 7) / 8 * 8);
  }

  void forward(const DeviceView4 &q, const DeviceView4 &k, const DeviceView4 &v,
               const DeviceView4 &o, const DeviceView3 &lse, void *stream,
               const DeviceLengths *keyLengths, const DeviceCaptures *captures) const override {
    checkLengths(keyLengths);
    std::optional<BoundCaptures> bound = bindCaptures(captures);
    ArgumentList arguments;
    arguments.addMemRef(q);
    arguments.addMemRef(k);
    arguments.addMemRef(v);
    arguments.addMemRef(o);
    arguments.addMemRef(lse);
    if (keyLengths)
      arguments.addMemRef(*keyLengths);
    addCaptures(arguments, bound);
    zeroFaultFlags(bound, stream);
    launch("fwd", q, k, arguments, stream);
    checkFaultFlags(bound, stream);
  }

  void backward(const DeviceView4 &q, const DeviceView4 &k, const DeviceView4 &v,
                const DeviceView4 &o, const DeviceView4 &gradOut, const DeviceView3 &lse,
                const DeviceView3 &delta, const DeviceView4 &gradQuery, const DeviceView4 &gradKey,
                const DeviceView4 &gradValue, void *stream, const DeviceLengths *keyLengths,
                const DeviceCaptures *captures) const override {
    checkLengths(keyLengths);
    std::optional<BoundCaptures> bound = bindCaptures(captures);
    CaptureArguments gradients;
    if (captureGradients_) {
      if (!captures || captures->gradients.size() != captures_.declarations.size())
        throw CallError(label_ + ": kernels compiled with capture gradients take one gradient "
                                 "buffer per captured tensor");
      gradients = CaptureBinder::bindGradients(captures_.declarations, captures_.callIndex,
                                               captures->gradients, label_);
    }
    if (program_.rowWise) {
      ArgumentList arguments;
      arguments.addMemRef(o);
      arguments.addMemRef(gradOut);
      arguments.addMemRef(delta);
      launch("bwd_delta", q, k, arguments, stream);
    }
    ArgumentList query;
    for (const DeviceView4 *view : {&q, &k, &v, &gradOut})
      query.addMemRef(*view);
    query.addMemRef(lse);
    query.addMemRef(delta);
    query.addMemRef(gradQuery);
    if (keyLengths)
      query.addMemRef(*keyLengths);
    addCaptures(query, bound);
    // The dQ kernel's gradient buffers, after the fault flags.
    query.addParameters(CaptureBinder::parameterAddresses(gradients));

    ArgumentList key;
    for (const DeviceView4 *view : {&q, &k, &v, &gradOut})
      key.addMemRef(*view);
    key.addMemRef(lse);
    key.addMemRef(delta);
    key.addMemRef(gradKey);
    key.addMemRef(gradValue);
    if (keyLengths)
      key.addMemRef(*keyLengths);
    addCaptures(key, bound);
    zeroFaultFlags(bound, stream);
    launch("bwd_dq", q, k, query, stream);
    launch("bwd_dkdv", q, k, key, stream);
    checkFaultFlags(bound, stream);
  }

private:
  /// A call must pass lengths exactly when the kernels were compiled to read them.
  void checkLengths(const DeviceLengths *keyLengths) const {
    if ((keyLengths != nullptr) != keyLengths_)
      throw CompileError(keyLengths_ ? "these GPU kernels take key lengths and none were given"
                                     : "key lengths given to GPU kernels compiled without them");
  }

  /// Checks a call's captures against the IR and lays them out with the call's device fault
  /// flags; nothing when the kernels read no capture. Throws CallError.
  std::optional<BoundCaptures> bindCaptures(const DeviceCaptures *captures) const {
    const size_t declared = captures_.declarations.size();
    const size_t given = captures ? captures->views.size() : 0;
    if (declared == 0 && given == 0)
      return std::nullopt;
    if (declared != given)
      throw CallError(label_ + ": the GPU kernels take " + std::to_string(declared) +
                      " captured tensors, the call passes " + std::to_string(given));
    if (captureScratchBytes() > 0 && !captures->scratch)
      throw CallError(label_ + ": a call with captures passes device scratch of " +
                      std::to_string(captureScratchBytes()) + " bytes for their fault flags");
    BoundCaptures bound;
    bound.flags = captures->scratch;
    bound.arguments = CaptureBinder::bind(captures_.declarations, captures_.callIndex,
                                          captures->views, label_,
                                          {captures->scratch, captures->scratch});
    return bound;
  }

  static void addCaptures(ArgumentList &arguments, const std::optional<BoundCaptures> &bound) {
    if (bound)
      arguments.addParameters(CaptureBinder::parameterAddresses(bound->arguments));
  }

  /// The flags start at 0 on the call's stream, before its first kernel.
  void zeroFaultFlags(std::optional<BoundCaptures> &bound, void *stream) const {
    if (!bound || CaptureBinder::faultFlagCount(bound->arguments) == 0)
      return;
    cuda::Driver &driver = cuda::Driver::get();
    driver.makeCurrent(device_);
    driver.fillWords(bound->flags, 0, CaptureBinder::faultFlagCount(bound->arguments), stream);
  }

  /// After the call's last kernel: reads the flags back (waiting for the stream) and throws
  /// CallError naming the first capture a region read outside of.
  void checkFaultFlags(std::optional<BoundCaptures> &bound, void *stream) const {
    if (!bound || CaptureBinder::faultFlagCount(bound->arguments) == 0)
      return;
    cuda::Driver &driver = cuda::Driver::get();
    driver.makeCurrent(device_);
    driver.copyToHost(CaptureBinder::hostFaultFlags(bound->arguments), bound->flags,
                      CaptureBinder::faultFlagCount(bound->arguments) * sizeof(int32_t), stream);
    CaptureBinder::checkFaults(captures_.declarations, bound->arguments);
  }

  struct Entry {
    cuda::FunctionHandle function;
    GpuKernelInfo info;
    /// What the kernel's PTX declares (-1: unknown): a launch must pass exactly that many.
    int64_t parameters = -1;
  };

  /// "attention_bwd_dq" -> "bwd_dq": kernels are named <function>_<role>.
  static std::string suffixOf(const std::string &name) {
    for (const char *role : {"bwd_delta", "bwd_dkdv", "bwd_dq", "fwd"}) {
      std::string suffix = std::string("_") + role;
      if (name.size() > suffix.size() &&
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
        return role;
    }
    return name;
  }

  void launch(const std::string &role, const DeviceView4 &q, const DeviceView4 &k,
              ArgumentList &arguments, void *stream) const {
    auto found = functions_.find(role);
    if (found == functions_.end())
      throw CompileError("the GPU program of this variant has no '" + role + "' kernel");
    const Entry &entry = found->second;
    // grid = (row blocks, heads, batch), rows and heads of the queries or of the keys.
    const bool overKeys = entry.info.grid.rfind("key", 0) == 0;
    const int64_t rows = overKeys ? k.sizes[2] : q.sizes[2];
    const int64_t heads = overKeys ? k.sizes[1] : q.sizes[1];
    cuda::LaunchShape shape;
    shape.grid[0] = static_cast<unsigned>((rows + entry.info.blockRows - 1) / entry.info.blockRows);
    shape.grid[1] = static_cast<unsigned>(heads);
    shape.grid[2] = static_cast<unsigned>(q.sizes[0]);
    shape.block[0] = static_cast<unsigned>(entry.info.threads);
    shape.dynamicSharedBytes = static_cast<unsigned>(entry.info.dynamicSharedBytes);
    if (shape.grid[0] == 0 || shape.grid[1] == 0 || shape.grid[2] == 0)
      return; // empty tensors: nothing to do
    std::vector<void *> addresses = arguments.addresses();
    // The driver cannot tell a missing parameter from garbage: a launcher that disagrees with
    // the lowering's signature is an error, not a kernel reading past its arguments.
    if (entry.parameters >= 0 && static_cast<int64_t>(addresses.size()) != entry.parameters)
      throw CompileError("GPU kernel " + entry.info.name + " of " + label_ + " declares " +
                         std::to_string(entry.parameters) + " parameters, the launch passes " +
                         std::to_string(addresses.size()));
    cuda::Driver &driver = cuda::Driver::get();
    driver.makeCurrent(device_);
    driver.launch(entry.function, shape, stream, addresses.data());
  }

  int device_;
  GpuProgram program_;
  std::string target_;
  double compileMillis_;
  bool keyLengths_;
  bool captureGradients_;
  VariantCaptures captures_;
  std::string label_;
  std::map<std::string, Entry> functions_;
};

std::shared_ptr<const GpuKernels> build(const VariantSpec &spec, GpuDtype dtype, int device) {
  auto start = std::chrono::steady_clock::now();
  cuda::Driver &driver = cuda::Driver::get();
  cuda::DeviceProperties properties = driver.properties(device);
  // Hopper gets its arch-specific kernels; other GPUs from sm_80 up run the sm_80 PTX, which
  // the driver JIT-compiles for them.
  codegen::GpuTarget target =
      properties.computeMajor == 9 ? codegen::GpuTarget::Sm90a : codegen::GpuTarget::Sm80;
  if (properties.computeMajor < 8)
    throw CompileError("attention GPU kernels need compute capability 8.0 or newer; device " +
                       std::to_string(device) + " (" + properties.name + ") is " +
                       std::to_string(properties.computeMajor) + "." +
                       std::to_string(properties.computeMinor));

  mlir::DialectRegistry registry;
  codegen::registerCpuDialects(registry);
  mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);
  CanonicalVariant variant = buildCanonicalVariant(spec, context);
  mlir::OwningOpRef<mlir::ModuleOp> &module = variant.module;

  ArtifactRequest request;
  request.canonicalIr = std::move(variant.keyText);
  request.target = codegen::gpuChip(target);
  request.options = std::string("ptx dtype=") + gpuDtypeName(dtype) + " backward" +
                    (spec.captureGradients ? " capture-gradients" : "");
  request.label = shortLabel(spec, dtype);

  std::string bytes = Jit::instance().artifact(request, [&](const std::string &dumpFolder) {
    std::string text;
    llvm::raw_string_ostream textStream(text);
    module->print(textStream);
    codegen::GpuCompileOptions options;
    options.target = target;
    options.dtype = gpuDtypeName(dtype);
    options.backward = true;
    options.captureGradients = spec.captureGradients;
    if (!dumpFolder.empty()) {
      // The IR after every pass that changed it, one tree per pass manager, numbered in order:
      // gpu-stages/0_kernels, 1_nvvm, 2_ptx.
      llvm::sys::fs::create_directory(dumpFolder + "/gpu-stages");
      int stageIndex = 0;
      options.configurePassManager = [&dumpFolder, stageIndex](mlir::PassManager &pm,
                                                               const std::string &stage) mutable {
        pm.enableIRPrintingToFileTree([](mlir::Pass *, mlir::Operation *) { return false; },
                                      [](mlir::Pass *, mlir::Operation *) { return true; },
                                      /*printModuleScope=*/false, /*printAfterOnlyOnChange=*/true,
                                      /*printAfterOnlyOnFailure=*/false,
                                      dumpFolder + "/gpu-stages/" + std::to_string(stageIndex++) +
                                          "_" + stage);
      };
    }
    GpuProgram program;
    try {
      program = codegen::compileAttentionToPtx(text, options);
    } catch (const codegen::GpuCompileError &error) {
      throw CompileError(std::string("GPU compilation of ") + request.label +
                         " failed: " + error.what());
    }
    if (!dumpFolder.empty()) {
      std::ofstream(dumpFolder + "/attn-canonical.mlir") << text;
      std::ofstream(dumpFolder + "/kernels.ptx") << program.ptx;
    }
    return serialize(program);
  });
  GpuProgram program = deserialize(bytes);
  double millis =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return std::make_shared<LoadedGpuKernels>(device, std::move(program), codegen::gpuChip(target),
                                            millis, request.label, spec.keyLengths,
                                            std::move(variant.captures), spec.captureGradients);
}
} // namespace

const char *gpuDtypeName(GpuDtype dtype) { return dtype == GpuDtype::BFloat16 ? "bf16" : "f16"; }

std::shared_ptr<const GpuKernels> getGpuKernels(const VariantSpec &spec, GpuDtype dtype,
                                                int device) {
  static MemoryCache<GpuKernels> &cache = *new MemoryCache<GpuKernels>;
  // Kernels are per device: a module lives in one device's context.
  std::string key = spec.cacheKey();
  key += gpuDtypeName(dtype);
  key += "|cuda:";
  key += std::to_string(device);
  return cache.getOrCreate(key, [&] { return build(spec, dtype, device); });
}
} // namespace attn::runtime
