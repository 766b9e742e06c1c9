"""Reads attn-opt output holding gpu.binary ops (gpu-module-to-binary{format=isa}), writes the
PTX of the first one to argv[1], and, with --ptxas=ARCH, assembles it (ptxas from $ATTN_PTXAS,
PATH or /usr/local/cuda/bin), printing ptxas's resource report. Exits non-zero when there is
no PTX or ptxas fails."""
import os
import re
import shutil
import subprocess
import sys


def main():
    output, arch = sys.argv[1], None
    for arg in sys.argv[2:]:
        if arg.startswith("--ptxas="):
            arch = arg.split("=", 1)[1]
    text = sys.stdin.read()
    match = re.search(r'assembly = "((?:[^"\\]|\\.)*)"', text)
    if not match:
        sys.exit("no gpu.object with PTX in the input")
    # MLIR prints string attributes with \XX hex escapes (\0A newline, \22 quote, \5C backslash).
    ptx = re.sub(r"\\([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), match.group(1))
    with open(output, "w") as file:
        file.write(ptx)
    if arch:
        ptxas = (os.environ.get("ATTN_PTXAS") or shutil.which("ptxas")
                 or "/usr/local/cuda/bin/ptxas")
        result = subprocess.run([ptxas, f"-arch={arch}", "-v", output, "-o", os.devnull],
                                capture_output=True, text=True)
        sys.stdout.write(result.stdout + result.stderr)
        sys.exit(result.returncode)


if __name__ == "__main__":
    main()
