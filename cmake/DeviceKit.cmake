# The device kit's build (scripts/device-kit.sh, `make device-kit`; its own build directory,
# build-kit/): the torch op library libattn_torch.so, attnc and attn-ptx-check with the MLIR/LLVM
# compiler linked in statically and every symbol of it hidden, so they run on a GPU machine that
# has torch but no LLVM. Included by the top-level CMakeLists.txt when ATTN_DEVICE_KIT is ON,
# after MLIR and torch are found; configures nothing else (no tests, models or benches).
#
# Debian's LLVM is built with LLVM_LINK_LLVM_DYLIB=ON: MLIR's CMake targets (MLIRIR, ...) link
# libLLVM.so, and mixing them with static LLVM component libraries aborts at start-up ("Option
# ... registered more than once"). So nothing here links an MLIR/LLVM CMake target: the archives
# are named as files, all of them, inside one --start-group/--end-group (the linker pulls only the
# members something needs).

# Hidden by default: only what torch looks up by registration (static initializers) is used from
# outside, and no LLVM/MLIR inline function or template instance leaks into the dynamic symbol
# table, where another LLVM in the process (Triton's, for FlexAttention) could bind to it.
add_compile_options(-fvisibility=hidden -fvisibility-inlines-hidden
                    -ffunction-sections -fdata-sections)

# --- the static MLIR/LLVM archives ------------------------------------------------------------
find_program(ATTN_LLVM_CONFIG NAMES llvm-config-${LLVM_VERSION_MAJOR} llvm-config
             HINTS ${LLVM_TOOLS_BINARY_DIR} NO_DEFAULT_PATH)
if(NOT ATTN_LLVM_CONFIG)
  message(FATAL_ERROR "device kit: llvm-config not found in ${LLVM_TOOLS_BINARY_DIR}")
endif()
execute_process(COMMAND ${ATTN_LLVM_CONFIG} --link-static --libfiles
                OUTPUT_VARIABLE _kit_llvm_files OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE _kit_rc)
if(NOT _kit_rc EQUAL 0)
  message(FATAL_ERROR "device kit: `${ATTN_LLVM_CONFIG} --link-static --libfiles` failed; the "
                      "static LLVM libraries (llvm-${LLVM_VERSION_MAJOR}-dev) are needed")
endif()
separate_arguments(_kit_llvm_files UNIX_COMMAND "${_kit_llvm_files}")
# Polly is a plugin of opt, not of the LLVM libraries we use, and its archives need isl.
list(FILTER _kit_llvm_files EXCLUDE REGEX "/lib(Polly|PollyISL)[^/]*\\.a$")
file(GLOB _kit_mlir_files "${LLVM_LIBRARY_DIR}/libMLIR*.a")
list(LENGTH _kit_mlir_files _kit_mlir_count)
list(LENGTH _kit_llvm_files _kit_llvm_count)
if(_kit_mlir_count EQUAL 0 OR _kit_llvm_count EQUAL 0)
  message(FATAL_ERROR "device kit: no static MLIR (${_kit_mlir_count}) or LLVM "
                      "(${_kit_llvm_count}) archives in ${LLVM_LIBRARY_DIR}")
endif()
message(STATUS "device kit: ${_kit_mlir_count} MLIR and ${_kit_llvm_count} LLVM archives, static")

# zlib and zstd are what the archives we use need at run time (compressed sections, bitcode);
# llvm-config also names libz3 and libxml2 (the static analyzer's solver, the Windows manifest
# tool), which nothing we link calls: --as-needed keeps them out of NEEDED.
find_package(ZLIB REQUIRED)
find_package(Threads REQUIRED)
find_library(ATTN_ZSTD_LIBRARY NAMES zstd REQUIRED)
add_library(attn_mlir_static INTERFACE)
target_link_libraries(attn_mlir_static INTERFACE
  "-Wl,--start-group" ${_kit_mlir_files} ${_kit_llvm_files} "-Wl,--end-group"
  ZLIB::ZLIB ${ATTN_ZSTD_LIBRARY} Threads::Threads ${CMAKE_DL_LIBS} m)
set(ATTN_MLIR_LIBS attn_mlir_static)

# lld links the ~45 MB library from ~430 archives in seconds; GNU ld takes minutes.
include(CheckLinkerFlag)
check_linker_flag(CXX "-fuse-ld=lld" ATTN_HAVE_LLD)
set(ATTN_KIT_LINK_OPTIONS -Wl,--exclude-libs,ALL -Wl,--gc-sections -Wl,--as-needed)
if(ATTN_HAVE_LLD)
  list(APPEND ATTN_KIT_LINK_OPTIONS -fuse-ld=lld)
endif()

# --- the compiler, the runtime and the torch op library ----------------------------------------
add_subdirectory(dialects)
add_subdirectory(passes)
add_subdirectory(codegen)
add_subdirectory(runtime)
add_subdirectory(frontend/attnc)
add_subdirectory(frontend/torch)
if(NOT ATTN_TORCH_CUDA)
  message(FATAL_ERROR "device kit: torch at ${ATTN_TORCH_PYTHON} (${ATTN_TORCH_VERSION}) is not a "
                      "CUDA build; the kit's op library needs the CUDA kernel")
endif()

# The kit's own ops (attn_kit::*): prepare/cache kernels, JIT statistics, the launch probe against
# the stand-in libcuda. Only in this build.
target_sources(attn_torch PRIVATE ${PROJECT_SOURCE_DIR}/test/gpu/KitProbe.cpp)
# Run path $ORIGIN alone, also in the build tree (no path of this machine's torch or LLVM): torch's
# own libraries are already loaded when torch.ops.load_library runs.
foreach(target attn_torch attnc)
  set_target_properties(${target} PROPERTIES BUILD_WITH_INSTALL_RPATH ON INSTALL_RPATH "\$ORIGIN")
  target_link_options(${target} PRIVATE ${ATTN_KIT_LINK_OPTIONS})
endforeach()
# Undefined symbols in the op library would surface only at load time on the GPU machine.
target_link_options(attn_torch PRIVATE -Wl,--no-undefined)

# attn-ptx-check: on-GPU numerics of attnc's PTX through its own driver calls.
add_executable(attn-ptx-check ${PROJECT_SOURCE_DIR}/test/gpu/attn-ptx-check.cpp)
target_link_libraries(attn-ptx-check PRIVATE ${CMAKE_DL_LIBS})
target_link_options(attn-ptx-check PRIVATE ${ATTN_KIT_LINK_OPTIONS})

# The stand-in libcuda (records launches, runs nothing): the kit's self-test and its kernel-cache
# fill run the launch path against it.
add_library(attn_fake_cuda SHARED ${PROJECT_SOURCE_DIR}/test/runtime/FakeCudaDriver.c)
set_target_properties(attn_fake_cuda PROPERTIES C_VISIBILITY_PRESET default)
target_compile_options(attn_fake_cuda PRIVATE -fvisibility=default)

add_custom_target(device-kit-binaries DEPENDS attn_torch attnc attn-ptx-check attn_fake_cuda)
