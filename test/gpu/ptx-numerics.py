#!/usr/bin/env python3
"""On-GPU numerics of the generated kernels: for normalizer {softmax, sigmoid, relu} x causal
x D {64, 128} x dtype {bf16, f16} on the device's target, compiles PTX with attnc and runs it
with attn-ptx-check against a float64 reference (forward O and LSE, backward dQ, dK, dV;
odd lengths, GQA). Exits 77 (ctest SKIP_RETURN_CODE) without a CUDA GPU.

  ptx-numerics.py --attnc build/bin/attnc --checker build/bin/attn-ptx-check [--target sm_90a]

On a GPU machine without LLVM, pass --ptx-dir with PTX files made elsewhere by --emit-only.
"""
import argparse
import os
import subprocess
import sys
import tempfile

SKIP = 77


def matrix(quick):
    for normalizer in ("softmax", "sigmoid", "relu"):
        for causal in (False, True):
            for dim in ((64,) if quick else (64, 128)):
                for dtype in ("bf16", "f16"):
                    yield normalizer, causal, dim, dtype


def name(normalizer, causal, dim, dtype, target):
    return f"{normalizer}{'-causal' if causal else ''}-d{dim}-{dtype}-{target}"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attnc")
    parser.add_argument("--checker", required=True)
    parser.add_argument("--target", default="sm_90a")
    parser.add_argument("--ptx-dir", help="read (or with --emit-only, write) PTX files here")
    parser.add_argument("--emit-only", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--wgmma", action="store_true",
                        help="sm_90a: the experimental warpgroup-MMA forward")
    options = parser.parse_args()
    workdir = options.ptx_dir or tempfile.mkdtemp(prefix="attn-ptx-")
    os.makedirs(workdir, exist_ok=True)
    failures = skipped = 0
    cases = list(matrix(options.quick))
    for normalizer, causal, dim, dtype in cases:
        label = name(normalizer, causal, dim, dtype, options.target) + (
            "-wgmma" if options.wgmma else "")
        ptx = os.path.join(workdir, label + ".ptx")
        if options.attnc and not (options.ptx_dir and os.path.exists(ptx) and not options.emit_only):
            args = [options.attnc, f"--variant={normalizer}", f"--head-dim={dim}",
                    f"--dtype={dtype}", f"--target={options.target}", "-o", ptx]
            if causal:
                args.append("--causal")
            if options.wgmma:
                args.append("--wgmma")
            compiled = subprocess.run(args, capture_output=True, text=True)
            if compiled.returncode != 0:
                print(f"FAIL {label}: attnc: {compiled.stderr.strip()}")
                failures += 1
                continue
        if options.emit_only:
            continue
        args = [options.checker, ptx, f"--normalizer={normalizer}", f"--head-dim={dim}",
                f"--dtype={dtype}"] + (["--causal"] if causal else [])
        checked = subprocess.run(args, capture_output=True, text=True)
        if checked.returncode == SKIP:
            print(f"ptx-numerics: SKIPPED ({checked.stdout.strip()})")
            return SKIP
        status = "ok" if checked.returncode == 0 else "FAIL"
        failures += checked.returncode != 0
        detail = " | ".join(line.strip() for line in (checked.stdout + checked.stderr).splitlines())
        print(f"{status:4} {label}: {detail}")
    if options.emit_only:
        print(f"ptx-numerics: wrote {len(cases)} PTX files to {workdir}")
        return 0
    print(f"ptx-numerics: {len(cases) - failures} of {len(cases)} variants within tolerance")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
