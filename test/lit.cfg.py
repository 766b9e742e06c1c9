# lit configuration of the attn compiler's test suite.
import os

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "ATTN"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.attn_obj_root, "test")
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "unit", "Inputs"]

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%attn_src", config.attn_src_root))
config.substitutions.append(("%python", config.python_executable))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP"])
llvm_config.use_default_substitutions()

tool_dirs = [config.attn_tools_dir, config.llvm_tools_dir]
tools = ["attn-opt", "attn-demo", "attnc"]
config.substitutions.append(("%attn-opt-path", os.path.join(config.attn_tools_dir, "attn-opt")))
llvm_config.add_tool_substitutions(tools, tool_dirs)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

# ptxas (CUDA toolkit) assembles PTX into cubins; CI has none, so those tests are skipped there.
import shutil
if os.environ.get("ATTN_PTXAS") or shutil.which("ptxas") or os.access("/usr/local/cuda/bin/ptxas", os.X_OK):
    config.available_features.add("ptxas")

# Execution tests of single passes: mlir-runner (mlir-22-tools) with MLIR's C runner utils
# (vector.print); the AVX-512 forms of attn-cpu-fast-math run where the host has AVX512F and
# AVX512DQ.
runner_utils = os.path.join(os.path.dirname(config.llvm_tools_dir), "lib",
                            "libmlir_c_runner_utils.so")
if shutil.which("mlir-runner", path=config.llvm_tools_dir) and os.path.exists(runner_utils):
    config.available_features.add("mlir-runner")
    config.substitutions.append(("%mlir_c_runner_utils", runner_utils))
try:
    with open("/proc/cpuinfo") as cpuinfo:
        cpu_flags = next((line.split() for line in cpuinfo if line.startswith("flags")), [])
except OSError:
    cpu_flags = []
if "avx512f" in cpu_flags and "avx512dq" in cpu_flags:
    config.available_features.add("avx512")
