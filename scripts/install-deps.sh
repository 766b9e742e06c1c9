#!/usr/bin/env bash
# Installs what the build and the tests need: Debian packages (as root or through sudo), then
# PyTorch from PyPI into the repository's virtual environment .venv (its LibTorch is what CMake
# builds against). Idempotent: a second run installs nothing and only checks.
#   ATTN_TORCH_VERSION  the torch to install (default 2.11.0, the GPU machine's version)
#   ATTN_PYTHON         the interpreter that makes .venv (default: python3 on PATH, >= 3.9)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools
  libzstd-dev zlib1g-dev libedit-dev libxml2-dev libcurl4-openssl-dev libffi-dev
  libgtest-dev python3 python3-venv
  # scripts/fuzz.sh (make fuzz, CI): clang with libFuzzer and the sanitizer runtimes; the LLVM
  # of libMLIR (clang-14 cannot compile passes/: no lambda captures of structured bindings)
  clang-22 libclang-rt-22-dev
  # attn-train: data (Fashion-MNIST, speech, spoken digits), plots, configs, images, and gloo's
  # headers (torch's c10d headers include them; the wheel ships gloo's code but not its headers)
  dataset-fashion-mnist pocketsphinx-testdata espeak-ng sox gnuplot-nox
  libyaml-cpp-dev nlohmann-json3-dev libpng-dev libjpeg-dev libgloo-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} Debian packages present"
else
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# PyTorch from PyPI. The Linux wheel is the CUDA 13 build (~0.5 GB, plus ~3 GB of NVIDIA
# libraries it depends on): its LibTorch links the ops' CUDA kernels, and it is the build the GPU
# machine runs, so what is built here loads there. PyPI has no smaller wheel that does both.
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
torch_version="${ATTN_TORCH_VERSION:-2.11.0}"
python_packages=("torch==$torch_version" pytest numpy scikit-build-core)
if [ -x "$venv/bin/python" ] &&
   "$venv/bin/python" - "$torch_version" <<'PY' 2>/dev/null
import sys, importlib.metadata as md
import pytest, numpy, scikit_build_core  # noqa: F401
sys.exit(md.version("torch").split("+")[0] != sys.argv[1])
PY
then
  echo "install-deps: .venv has torch $torch_version"
else
  python="${ATTN_PYTHON:-python3}"
  echo "install-deps: installing ${python_packages[*]} into .venv ($("$python" --version))"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --progress-bar off "${python_packages[@]}"
fi
echo "install-deps: done"
