"""Finds and loads libattn_torch.so, which registers the torch ops ``torch.ops.attn.*``.

Looked up, in order: ``$ATTN_TORCH_LIBRARY`` (a path; the build tree's tests use it), then the
copy installed beside this package (``attn/_lib``). The library is built against one PyTorch
version; loading it into another gives undefined-symbol errors, so the versions are compared first
and a mismatch is reported in words.
"""
import os
import pathlib

import torch

_LIBRARY_NAME = "libattn_torch.so"


def _library_path() -> pathlib.Path:
    override = os.environ.get("ATTN_TORCH_LIBRARY")
    if override:
        path = pathlib.Path(override)
        if not path.is_file():
            raise ImportError(f"attn: ATTN_TORCH_LIBRARY={override} is not a file")
        return path
    path = pathlib.Path(__file__).resolve().parent / "_lib" / _LIBRARY_NAME
    if not path.is_file():
        raise ImportError(
            f"attn: {path} is missing; install the package with `pip install .` from the "
            "repository, or set ATTN_TORCH_LIBRARY to a built libattn_torch.so")
    return path


def _check_torch_version() -> None:
    try:
        from attn import _build_info
    except ImportError:  # the build tree: the library was built against this very torch
        return
    built, running = _build_info.TORCH_VERSION, torch.__version__
    if built.split("+")[0].split(".")[:2] != running.split("+")[0].split(".")[:2]:
        raise ImportError(
            f"attn was built against torch {built} but torch {running} is installed; rebuild "
            "it in this environment: pip install --force-reinstall --no-deps . (from the repository)")


def load() -> pathlib.Path:
    _check_torch_version()
    path = _library_path()
    torch.ops.load_library(str(path))
    return path
