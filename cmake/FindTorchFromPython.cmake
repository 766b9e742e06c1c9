# Finds LibTorch inside an installed PyTorch wheel (torch >= 2.4), through a Python interpreter.
#
# The interpreter is, in order: -DATTN_TORCH_PYTHON=..., pip's (under scikit-build-core), the
# repository's .venv (made by scripts/install-deps.sh), the active virtual environment
# ($VIRTUAL_ENV), then `python3` on PATH.
# Sets ATTN_TORCH_PYTHON (also used by the pytest tests and benches) and ATTN_TORCH_VERSION, and
# finds the Torch package (targets `torch`, TORCH_LIBRARIES, TORCH_CUDA_LIBRARIES on CUDA wheels).
set(ATTN_TORCH_MIN_VERSION 2.4)

if(SKBUILD AND Python_EXECUTABLE AND NOT ATTN_TORCH_PYTHON)
  # pip install: the interpreter pip builds for (its environment has torch).
  set(ATTN_TORCH_PYTHON "${Python_EXECUTABLE}")
endif()
if(NOT ATTN_TORCH_PYTHON)
  if(EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
    set(_attn_python "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  elseif(DEFINED ENV{VIRTUAL_ENV} AND EXISTS "$ENV{VIRTUAL_ENV}/bin/python")
    set(_attn_python "$ENV{VIRTUAL_ENV}/bin/python")
  else()
    find_program(_attn_python NAMES python3 python)
  endif()
  set(ATTN_TORCH_PYTHON "${_attn_python}" CACHE FILEPATH "Python interpreter with PyTorch installed")
endif()

# Under pip (scikit-build-core) the build runs in an isolated environment that hides the target
# environment's packages through PYTHONPATH; without it, the interpreter sees the torch the
# package will run with, and that is the one to build against.
set(_attn_probe_environment "")
if(SKBUILD)
  set(_attn_probe_environment "${CMAKE_COMMAND}" -E env --unset=PYTHONPATH)
endif()
execute_process(
  COMMAND ${_attn_probe_environment} "${ATTN_TORCH_PYTHON}" -c
          "import torch, torch.utils; print(torch.__version__); print(torch.utils.cmake_prefix_path); print(int(torch.version.cuda is not None))"
  OUTPUT_VARIABLE _attn_torch_out
  ERROR_VARIABLE _attn_torch_err
  RESULT_VARIABLE _attn_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _attn_torch_rc EQUAL 0 AND SKBUILD)
  message(FATAL_ERROR
    "pip is installing attn into an environment without torch (${ATTN_TORCH_PYTHON}):\n"
    "${_attn_torch_err}\nInstall torch >= ${ATTN_TORCH_MIN_VERSION} there first "
    "(pip install torch), then pip install . again; attn is built against that torch.")
elseif(NOT _attn_torch_rc EQUAL 0)
  message(FATAL_ERROR
    "Could not import torch with ${ATTN_TORCH_PYTHON}:\n${_attn_torch_err}\n"
    "Run scripts/install-deps.sh (it makes .venv with the pinned PyTorch), or pass "
    "-DATTN_TORCH_PYTHON=/path/to/python of an environment with torch >= ${ATTN_TORCH_MIN_VERSION}.")
endif()
string(REPLACE "\n" ";" _attn_torch_lines "${_attn_torch_out}")
list(GET _attn_torch_lines 0 ATTN_TORCH_VERSION)
list(GET _attn_torch_lines 1 _attn_torch_prefix)
list(GET _attn_torch_lines 2 ATTN_TORCH_WHEEL_HAS_CUDA)
string(REGEX MATCH "^[0-9]+\\.[0-9]+(\\.[0-9]+)?" _attn_torch_numeric "${ATTN_TORCH_VERSION}")
if(_attn_torch_numeric VERSION_LESS ATTN_TORCH_MIN_VERSION)
  message(FATAL_ERROR "torch ${ATTN_TORCH_VERSION} at ${ATTN_TORCH_PYTHON} is too old: "
                      "the project needs torch >= ${ATTN_TORCH_MIN_VERSION}")
endif()

# A CUDA wheel's CMake package configures only with the CUDA toolkit present (its cuda.cmake
# requires CUDAToolkit); say so in words rather than through CMake's own failure deep inside it.
if(ATTN_TORCH_WHEEL_HAS_CUDA AND NOT CMAKE_CUDA_COMPILER)
  find_program(_attn_nvcc nvcc PATHS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
  if(_attn_nvcc)
    set(CMAKE_CUDA_COMPILER "${_attn_nvcc}" CACHE FILEPATH "")
  else()
    message(FATAL_ERROR
      "torch ${ATTN_TORCH_VERSION} at ${ATTN_TORCH_PYTHON} is a CUDA build, and its CMake package "
      "needs the CUDA toolkit (nvcc), which is not installed. Install the toolkit, or a CPU build "
      "of torch (pip install torch --index-url https://download.pytorch.org/whl/cpu) and pass "
      "-DATTN_TORCH_PYTHON=<its python>.")
  endif()
endif()

# A build tree configured against another torch (another environment; pip's isolated build
# environments are new each time) keeps that torch's library paths in its cache: forget them.
get_filename_component(_attn_torch_root "${_attn_torch_prefix}/../.." ABSOLUTE)
if(ATTN_TORCH_ROOT_CONFIGURED AND NOT ATTN_TORCH_ROOT_CONFIGURED STREQUAL _attn_torch_root)
  message(STATUS "torch moved from ${ATTN_TORCH_ROOT_CONFIGURED} to ${_attn_torch_root}: "
                 "forgetting the old torch's cached paths")
  set(_attn_old_root "${ATTN_TORCH_ROOT_CONFIGURED}") # the loop unsets the cache entry itself
  get_cmake_property(_attn_cache_variables CACHE_VARIABLES)
  foreach(_attn_variable IN LISTS _attn_cache_variables)
    get_property(_attn_value CACHE "${_attn_variable}" PROPERTY VALUE)
    string(FIND "${_attn_value}" "${_attn_old_root}" _attn_position)
    if(_attn_position GREATER -1)
      unset("${_attn_variable}" CACHE)
    endif()
  endforeach()
endif()
set(ATTN_TORCH_ROOT_CONFIGURED "${_attn_torch_root}" CACHE INTERNAL "the torch this tree is configured for")

list(APPEND CMAKE_PREFIX_PATH "${_attn_torch_prefix}")
find_package(Torch REQUIRED)
message(STATUS "Using PyTorch ${ATTN_TORCH_VERSION} (${ATTN_TORCH_PYTHON})")
