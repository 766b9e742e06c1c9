#!/usr/bin/env python3
"""The device kit's checks and its kernel-cache fill (scripts/device-kit.sh,
scripts/device-kit-test.sh). Runs here without a GPU, and on the GPU machine as run.sh's
preflight. KIT is an unpacked kit (attn-kit/, repository paths inside).

  kit_tool.py needed LIB [BIN ...]   the dynamic dependencies: only libc/libm/libgcc_s/libstdc++,
                                     zlib, zstd, libgomp and torch's own libraries; no LLVM/MLIR;
                                     run path $ORIGIN at most
  kit_tool.py fill --kit KIT         compiles every variant of bench/gpu/variants.py into
                                     KIT/cache through the stand-in libcuda (a Hopper: sm_90a)
  kit_tool.py check --kit KIT        the self-test: the library's dependencies; then, in a fresh
                                     Python with no LD_LIBRARY_PATH and the stand-in libcuda: it
                                     loads and maps no LLVM/MLIR, the CPU kernel is right, every
                                     variant comes from the kit's cache (0 compiles), the launch
                                     path records the expected launches; run.sh --dry-run writes
                                     its report; attn-ptx-check --self-test passes
"""
import argparse
import ctypes
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ALLOWED = re.compile(r"^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux-x86-64|"
                     r"libz|libzstd|libgomp|libtorch|libtorch_cpu|libtorch_cuda|libc10|libc10_cuda|"
                     r"libcudart)\.so(\.\d+)*$")
FORBIDDEN = re.compile(r"LLVM|MLIR", re.I)


def fail(message):
    print(f"kit: FAILED: {message}", flush=True)
    sys.exit(1)


def paths(kit):
    return {
        "library": os.path.join(kit, "lib", "libattn_torch.so"),
        "fake": os.path.join(kit, "lib", "libattn_fake_cuda.so"),
        "cache": os.path.join(kit, "cache"),
        "checker": os.path.join(kit, "bin", "attn-ptx-check"),
        "pythonpath": os.pathsep.join(os.path.join(kit, p) for p in (
            "frontend/python", "bench/gpu", "test/python")),
    }


# ----- needed ----------------------------------------------------------------------------------
def needed(files):
    readelf = shutil.which("readelf")
    if not readelf:
        print("kit: readelf not installed: dynamic dependencies not checked")
        return
    for path in files:
        dynamic = subprocess.run([readelf, "-d", path], capture_output=True, text=True,
                                 check=True).stdout
        libraries = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
        run_paths = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r\w*path: \[([^\]]*)\]", dynamic)
        bad = [lib for lib in libraries if FORBIDDEN.search(lib) or not ALLOWED.match(lib)]
        if bad:
            fail(f"{path} needs {', '.join(bad)} (allowed: libc, libstdc++, zlib, zstd, libgomp, "
                 "torch's libraries; never LLVM/MLIR)")
        for run_path in run_paths:
            if any(entry not in ("$ORIGIN", "") for entry in run_path.split(":")):
                fail(f"{path} has run path {run_path}: only $ORIGIN (no path of this machine)")
        versions = subprocess.run([readelf, "-V", "-W", path], capture_output=True,
                                  text=True).stdout
        newest = {}
        for name, major, minor, patch in re.findall(r"Name: (GLIBC|GLIBCXX|CXXABI)_(\d+)\.(\d+)(?:\.(\d+))?",
                                                    versions):
            version = (int(major), int(minor), int(patch or 0))
            newest[name] = max(newest.get(name, version), version)
        print(f"kit: {os.path.basename(path)}: needs {', '.join(libraries)}; run path "
              f"{run_paths[0] if run_paths else 'none'}; newest symbol versions " +
              ", ".join(f"{k}_{'.'.join(map(str, v))}" for k, v in sorted(newest.items())))
    ldd = shutil.which("ldd")
    if ldd:
        for path in files:
            environment = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
            resolved = subprocess.run([ldd, path], capture_output=True, text=True,
                                      env=environment).stdout
            if FORBIDDEN.search(resolved):
                fail(f"ldd {path} resolves an LLVM/MLIR library:\n{resolved}")


# ----- the child processes ---------------------------------------------------------------------
def child_environment(kit, cache, devices="1"):
    p = paths(kit)
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("LD_LIBRARY_PATH", "ATTN_CACHE_DISABLE", "ATTN_DUMP_DIR")}
    environment.update(ATTN_LIBCUDA=p["fake"], FAKE_CUDA_DEVICES=devices, ATTN_CACHE_DIR=cache,
                       ATTN_TORCH_LIBRARY=p["library"], PYTHONPATH=p["pythonpath"],
                       PYTHONDONTWRITEBYTECODE="1")
    return environment


def run_child(kit, mode, cache, devices="1", extra=()):
    result = subprocess.run([sys.executable, os.path.abspath(__file__), mode, "--kit", kit,
                             *extra], env=child_environment(kit, cache, devices))
    if result.returncode != 0:
        fail(f"{mode} exited with {result.returncode}")


# The stand-in libcuda holds 64 kernel handles: a process loads at most this many variants.
CHUNK = 12


def for_chunks(kit, mode, cache):
    import_variants(kit)
    import variants
    count = len(variants.cache_variants())
    for first in range(0, count, CHUNK):
        run_child(kit, mode, cache, extra=("--first", str(first), "--count", str(CHUNK)))


def import_variants(kit):
    path = os.path.join(kit, "bench", "gpu")
    if path not in sys.path:
        sys.path.insert(0, path)


def load(kit):
    import torch
    torch.ops.load_library(paths(kit)["library"])
    return torch


def child_cache(kit, first, count, verify):
    """Fill (verify=False) or check (verify=True: all from the cache, nothing compiled) the
    variants [first, first + count) of variants.cache_variants()."""
    torch = load(kit)
    import variants
    start = time.monotonic()
    cases = variants.cache_variants()[first:first + count]
    for name, dim, causal, dtype in cases:
        torch.ops.attn_kit.prepare(variants.op_variant(name, dim), dim, causal, dtype, 0,
                                   variants.capture_signature(name))
    compiles, disk, _ = torch.ops.attn_kit.jit_statistics()
    span = f"variants {first}-{first + len(cases) - 1}"
    if verify and (compiles != 0 or disk != len(cases)):
        fail(f"kernel cache, {span}: {compiles} compiles and {disk} reads for {len(cases)} "
             "variants (want 0 and all): the kit's cache keys differ from the library's")
    print(f"kit: cache, {span}: {compiles} compiled, {disk} read from the cache "
          f"({time.monotonic() - start:.1f} s)", flush=True)


class FakeLaunch(ctypes.Structure):
    _fields_ = [("function", ctypes.c_int), ("grid", ctypes.c_uint * 3),
                ("block", ctypes.c_uint * 3), ("sharedBytes", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("firstPointer", ctypes.c_void_p),
                ("firstSizes", ctypes.c_int64 * 4)]


def child_check(kit):
    # Another LLVM in the process first, as on the GPU machine (Triton's, for FlexAttention):
    # ours is hidden, so neither binds to the other's symbols.
    try:
        import triton._C.libtriton  # noqa: F401
        other_llvm = "with Triton's LLVM loaded first"
    except ImportError:
        other_llvm = "(Triton not installed: no second LLVM in the process)"
    torch = load(kit)
    import attn  # the package, on the library already loaded (ATTN_TORCH_LIBRARY)
    import reference

    with open("/proc/self/maps") as maps:
        mapped = sorted({line.split()[-1] for line in maps if FORBIDDEN.search(line.split()[-1])})
    if mapped:
        fail(f"the process maps LLVM/MLIR libraries: {mapped}")
    print("kit: loaded in a fresh process; no LLVM/MLIR library mapped")

    # The CPU kernel: the statically linked compiler JIT-compiles it in process.
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 37, 64), torch.randn(2, 2, 53, 64), torch.randn(2, 2, 53, 64)
    for normalizer in ("softmax", "sigmoid"):
        error = reference.relative_error(attn.attention(q, k, v, normalizer, None, True),
                                         reference.attention(q, k, v, normalizer, causal=True))
        if not error < 1e-5:
            fail(f"CPU {normalizer}: relative error {error:.2e} against float64")
    print(f"kit: CPU kernels (softmax, sigmoid, causal, GQA) match float64 {other_llvm}")
    compile_ms, _ = torch.ops.attn_kit.prepare("relu(scale=0.5)", 64, True, "f16", 0)
    print(f"kit: GPU compile in process {other_llvm}: relu(scale=0.5) causal d=64 f16 in "
          f"{compile_ms:.0f} ms")

    # The launch path, recorded by the stand-in libcuda.
    fake = ctypes.CDLL(paths(kit)["fake"])
    fake.fakeCudaLaunch.restype = ctypes.POINTER(FakeLaunch)
    fake.fakeCudaFunctionName.restype = ctypes.c_char_p
    batch, heads, kv_heads, queries, keys = 3, 8, 2, 200, 77
    for normalizer, expected in (("softmax", ["_fwd", "_bwd_delta", "_bwd_dq", "_bwd_dkdv"]),
                                 ("sigmoid", ["_fwd", "_bwd_dq", "_bwd_dkdv"])):
        fake.fakeCudaReset()
        rows = torch.ops.attn_kit.launch_probe(normalizer, 64, False, "bf16",
                                               [batch, heads, kv_heads, queries, keys])
        count = fake.fakeCudaLaunchCount()
        launches = [fake.fakeCudaLaunch(i).contents for i in range(count)]
        names = [fake.fakeCudaFunctionName(l.function).decode() for l in launches]
        if len(names) != len(expected) or not all(n.endswith(e) for n, e in zip(names, expected)):
            fail(f"{normalizer}: launched {names}, want kernels ending in {expected}")
        forward, keys_kernel = launches[0], launches[-1]
        want_forward = (math.ceil(queries / rows[0]), heads, batch)
        if tuple(forward.grid) != want_forward:
            fail(f"{normalizer} forward grid {tuple(forward.grid)}, want {want_forward}")
        want_keys = (math.ceil(keys / rows[2]), kv_heads, batch)
        if tuple(keys_kernel.grid) != want_keys:
            fail(f"{normalizer} dK/dV grid {tuple(keys_kernel.grid)}, want {want_keys}")
        if any(l.stream != 0x5150 for l in launches):
            fail(f"{normalizer}: a kernel was not launched on the caller's stream")
        if forward.firstPointer != 0x10000 or tuple(forward.firstSizes) != (batch, heads,
                                                                             queries, 64):
            fail(f"{normalizer}: the forward's first memref is not q")
        for launch, name in zip(launches, names):
            if launch.block[0] % 32 or launch.block[0] == 0:
                fail(f"{name}: block {tuple(launch.block)} is not whole warps")
            if launch.sharedBytes > 48 * 1024 and fake.fakeCudaSharedOptIn(launch.function) < \
                    launch.sharedBytes:
                fail(f"{name}: {launch.sharedBytes} B of shared memory without the opt-in")
        print(f"kit: launch path ({normalizer}): {', '.join(names)}; forward grid "
              f"{tuple(forward.grid)} × block {tuple(forward.block)}")

    # Captured tensors: each call zeroes its fault flags before its kernels and reads them
    # back after (forward and backward: two of each), and the kernels take more parameters.
    import variants
    fake.fakeCudaReset()
    torch.ops.attn_kit.launch_probe(variants.op_variant("document_mask", 64), 64, True, "bf16",
                                    [batch, heads, kv_heads, queries, keys],
                                    variants.capture_signature("document_mask"))
    names = [fake.fakeCudaFunctionName(fake.fakeCudaLaunch(i).contents.function).decode()
             for i in range(fake.fakeCudaLaunchCount())]
    zeroed, read = fake.fakeCudaMemsetCount(), fake.fakeCudaCopyCount()
    if len(names) != 4 or (zeroed, read) != (2, 2):
        fail(f"captures: launched {names}, zeroed the fault flags {zeroed} and read them back "
             f"{read} times (want 4 kernels, 2 and 2)")
    print(f"kit: launch path (document mask from captured ids): {', '.join(names)}; fault flags "
          "zeroed and read back per call")


# ----- check -----------------------------------------------------------------------------------
def check(kit, keep):
    p = paths(kit)
    for required in (p["library"], p["fake"], p["checker"]):
        if not os.path.exists(required):
            fail(f"{required} is missing")
    needed([p["library"], p["checker"]])
    work = tempfile.mkdtemp(prefix="attn-kit-check-")
    try:
        cache = os.path.join(work, "cache")
        shutil.copytree(p["cache"], cache)  # the kit's own cache stays as it was packed
        run_child(kit, "_child-check", cache, devices="2")
        # Every variant the GPU run asks for is in the kit's cache: nothing compiles.
        for_chunks(kit, "_child-verify", cache)
        result = subprocess.run([p["checker"], "--self-test"], capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"attn-ptx-check --self-test: {result.stdout}{result.stderr}")
        print("kit: attn-ptx-check --self-test passes")
        out = os.path.join(work, "results")
        result = subprocess.run(["bash", os.path.join(kit, "bench", "gpu", "run.sh"), "--dry-run",
                                 "--out", out], capture_output=True, text=True)
        print(result.stdout[-2000:], end="")
        if result.returncode != 0:
            fail(f"run.sh --dry-run exited with {result.returncode}:\n{result.stderr[-3000:]}")
        reports = [f for f in os.listdir(out) if f.endswith(".md")]
        if not reports:
            fail("run.sh --dry-run wrote no report")
        print(f"kit: run.sh --dry-run wrote {', '.join(sorted(os.listdir(out)))}")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print("kit: self-test passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["needed", "fill", "check", "_child-fill", "_child-verify",
                                         "_child-check"])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--kit")
    parser.add_argument("--keep", action="store_true", help="keep check's temporary folder")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=CHUNK)
    args = parser.parse_args()
    if args.mode == "needed":
        needed(args.files)
        return 0
    if not args.kit:
        parser.error("--kit is required")
    kit = os.path.abspath(args.kit)
    if args.mode == "fill":
        os.makedirs(paths(kit)["cache"], exist_ok=True)
        for_chunks(kit, "_child-fill", paths(kit)["cache"])
    elif args.mode == "check":
        check(kit, args.keep)
    elif args.mode in ("_child-fill", "_child-verify"):
        child_cache(kit, args.first, args.count, verify=args.mode == "_child-verify")
    elif args.mode == "_child-check":
        child_check(kit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
