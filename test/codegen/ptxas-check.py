#!/usr/bin/env python3
"""Assembles every generated GPU kernel with ptxas and fails on spills or shared memory over
the target's limit.

Matrix: normalizer {softmax, sigmoid, relu} x causal {no, yes} x D {64, 128} x dtype
{bf16, f16} x target {sm_80, sm_90a}, the experimental sm_90a wgmma forward (causal), plus
the examples with a custom normalizer, a score_mod (ALiBi) and a sliding window. Each compile holds the forward and backward kernels.
Exits 77 (ctest SKIP_RETURN_CODE) when no ptxas is installed: CI has no CUDA toolkit.

  ptxas-check.py --attnc build/bin/attnc [--examples frontend/examples] [--jobs N] [--quick]
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90a": 227 * 1024}
KERNEL_LINE = re.compile(r"^// attn.kernel (\S+) .*dynamic_shared_memory=(\d+)", re.M)
ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(\S+)'")
SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def find_ptxas():
    for candidate in (os.environ.get("ATTN_PTXAS"), shutil.which("ptxas"),
                      "/usr/local/cuda/bin/ptxas"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def cases(examples, quick):
    dims = [64] if quick else [64, 128]
    for target in ("sm_80", "sm_90a"):
        for dtype in ("bf16", "f16"):
            for variant in ("softmax", "sigmoid", "relu"):
                for causal in (False, True):
                    for dim in dims:
                        name = f"{variant}{'-causal' if causal else ''}-d{dim}-{dtype}-{target}"
                        args = [f"--variant={variant}", f"--head-dim={dim}", f"--dtype={dtype}",
                                f"--target={target}"] + (["--causal"] if causal else [])
                        yield name, target, args
            if target == "sm_90a":
                for variant in ("softmax", "sigmoid", "relu"):
                    for dim in dims:
                        yield (f"{variant}-causal-d{dim}-{dtype}-{target}-wgmma", target,
                               [f"--variant={variant}", f"--head-dim={dim}", f"--dtype={dtype}",
                                f"--target={target}", "--causal", "--wgmma"])
            if quick:
                continue
            for example in ("custom", "alibi", "relu"):
                path = os.path.join(examples, example + ".mlir")
                if os.path.exists(path):
                    yield (f"example-{example}-{dtype}-{target}", target,
                           [path, f"--dtype={dtype}", f"--target={target}"])


def check(case, attnc, ptxas, workdir):
    name, target, args = case
    ptx_path = os.path.join(workdir, name + ".ptx")
    start = time.monotonic()
    compiled = subprocess.run([attnc, *args, "--emit=ptx", "-o", ptx_path],
                              capture_output=True, text=True)
    compile_ms = (time.monotonic() - start) * 1000
    if compiled.returncode != 0:
        return name, [f"attnc failed: {compiled.stderr.strip()}"], [], compile_ms
    ptx = open(ptx_path).read()
    dynamic = {kernel: int(size) for kernel, size in KERNEL_LINE.findall(ptx)}
    assembled = subprocess.run([ptxas, f"-arch={target}", "-v", ptx_path, "-o", os.devnull],
                               capture_output=True, text=True)
    problems, rows = [], []
    if assembled.returncode != 0:
        return name, [f"ptxas failed: {assembled.stderr.strip()}"], [], compile_ms
    if re.search(r"^\s*\.local\b", ptx, re.M):
        problems.append("PTX declares .local memory")
    for function in re.findall(r"^\s*\.extern \.func.*?(\w+)\s*\(", ptx, re.M):
        problems.append(f"PTX calls the unresolved external function {function}")
    kernel = None
    for line in assembled.stderr.splitlines():
        if (m := ENTRY.search(line)):
            kernel = m.group(1)
        elif (m := SPILLS.search(line)) and kernel:
            stores, loads = int(m.group(1)), int(m.group(2))
            if stores or loads:
                problems.append(f"{kernel}: {stores} bytes spill stores, {loads} bytes spill loads")
        elif (m := USED.search(line)) and kernel:
            registers, static = int(m.group(1)), int(m.group(2) or 0)
            shared = static + dynamic.get(kernel, 0)
            if shared > SHARED_LIMIT[target]:
                problems.append(f"{kernel}: {shared} bytes shared memory > {SHARED_LIMIT[target]}")
            rows.append((kernel, registers, shared))
    if len(rows) != len(dynamic):
        problems.append(f"ptxas reported {len(rows)} kernels, attnc launched {len(dynamic)}")
    return name, problems, rows, compile_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attnc", required=True)
    parser.add_argument("--examples", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                           "frontend", "examples"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--quick", action="store_true", help="D=64 built-ins only")
    options = parser.parse_args()
    ptxas = find_ptxas()
    if not ptxas:
        print("ptxas-check: SKIPPED (no ptxas; set ATTN_PTXAS or install the CUDA toolkit)")
        return SKIP
    failures = 0
    with tempfile.TemporaryDirectory(prefix="attn-ptxas-") as workdir, \
            concurrent.futures.ThreadPoolExecutor(options.jobs) as pool:
        jobs = [pool.submit(check, case, options.attnc, ptxas, workdir)
                for case in cases(options.examples, options.quick)]
        for job in jobs:
            name, problems, rows, compile_ms = job.result()
            figures = ", ".join(f"{kernel} {regs} regs {shared} B smem"
                                for kernel, regs, shared in rows)
            status = "FAIL" if problems else "ok"
            print(f"{status:4} {name} ({compile_ms:.0f} ms IR->PTX): {figures}")
            for problem in problems:
                print(f"     {problem}")
            failures += bool(problems)
    print(f"ptxas-check: {len(jobs) - failures} of {len(jobs)} variants clean")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
