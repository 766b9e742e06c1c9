"""Lets `pytest test/python` run from a checkout: without an installed `attn`, the package comes
from frontend/python and the op library from build/ (ctest sets both explicitly)."""
import importlib.util
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))  # reference.py
if importlib.util.find_spec("attn") is None:
    sys.path.insert(0, str(ROOT / "frontend" / "python"))
    os.environ.setdefault("ATTN_TORCH_LIBRARY", str(ROOT / "build" / "lib" / "libattn_torch.so"))
