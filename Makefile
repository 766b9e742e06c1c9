# The two commands of the README: `make demo` and `make test`. Everything else is plumbing.
BUILD ?= build
CMAKE_FLAGS ?=

.PHONY: demo test fuzz sanitize build configure deps clean device-kit device-kit-test

deps:
	@bash scripts/install-deps.sh

configure: deps
	@if [ ! -f $(BUILD)/build.ninja ]; then \
	  cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS); \
	fi

build: configure
	@cmake --build $(BUILD)

demo: build
	@bash scripts/demo.sh $(BUILD)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j$$(nproc)

# libFuzzer + ASan/UBSan on parse -> canonicalize -> attn-legalize -> attn-tile/-derive-backward/
# -tile-gpu, for FUZZ_SECONDS (its own clang build in build-fuzz/; see scripts/fuzz.sh).
FUZZ_SECONDS ?= 120
fuzz: deps
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

# The dialect, pass, runtime and torch-op tests under ASan + UBSan (build-asan/; see
# scripts/sanitize.sh).
sanitize: deps
	@bash scripts/sanitize.sh

# The device kit for the GPU machine (issue 18): build-kit/attn-device-kit.tar.xz holds the torch
# op library with MLIR/LLVM static and hidden, attn-ptx-check, a pre-filled kernel cache, the GPU
# tests and bench/gpu/run.sh (see scripts/device-kit.sh and the README's "Device kit").
# device-kit-test also unpacks it and runs its self-test against the stand-in libcuda.
device-kit: deps
	@bash scripts/device-kit.sh

device-kit-test: deps
	@bash scripts/device-kit-test.sh

clean:
	rm -rf $(BUILD)
