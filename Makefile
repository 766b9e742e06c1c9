# The two commands of the README: `make demo` and `make test`. Everything else is plumbing.
BUILD ?= build
CMAKE_FLAGS ?=

.PHONY: demo test fuzz sanitize build configure deps clean

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

clean:
	rm -rf $(BUILD)
