#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need. Idempotent: a second run
# installs nothing and only checks. Runs as root or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools
  libzstd-dev zlib1g-dev libedit-dev libxml2-dev libcurl4-openssl-dev libffi-dev
  libtorch-dev libgtest-dev python3
  # the Python smoke test of the ops (torch.ops.load_library)
  python3-torch
  # attn-train: data (Fashion-MNIST, speech, spoken digits), plots, configs, images, c10d Gloo,
  # and an optimised BLAS (Debian's LibTorch otherwise runs on the reference libblas3, ~25x slower)
  dataset-fashion-mnist pocketsphinx-testdata espeak-ng sox gnuplot-nox
  libyaml-cpp-dev nlohmann-json3-dev libpng-dev libjpeg-dev libgloo-dev libopenblas0-openmp
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} Debian packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
