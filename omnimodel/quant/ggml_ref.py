"""GGML's own C quantizer, dequantizer and GGUF reader through ctypes: the reference we test against.

The library directory comes from `OMNIMODEL_GGML_LIB_DIR`, else from the toolchain's cached CPU
build (`omnimodel.toolchain.build.ensure_ggml_build("cpu").lib_dir`).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np

from omnimodel.errors import OmniError, ToolchainError
from omnimodel.quant.formats import get_format


class _TypeTraits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def find_lib_dir(build: bool = False) -> Path | None:
    """Directory holding libggml-base.so, or None when no build is known (build=True may build one)."""
    env = os.environ.get("OMNIMODEL_GGML_LIB_DIR")
    if env:
        return Path(env) if (Path(env) / "libggml-base.so").exists() else None
    try:
        from omnimodel.toolchain.build import ensure_ggml_build, list_builds
    except ImportError:
        return None
    try:
        if build:
            return Path(ensure_ggml_build("cpu").lib_dir)
    except OmniError:
        return None
    for b in list_builds():
        if b.backend == "cpu" and (b.lib_dir / "libggml-base.so").exists():
            return b.lib_dir
    return None


@functools.lru_cache(maxsize=4)
def load(lib_dir: str) -> ctypes.CDLL:
    """Load libggml-base from `lib_dir` and declare the functions we call."""
    path = Path(lib_dir) / "libggml-base.so"
    if not path.exists():
        raise ToolchainError(f"{path} not found; build GGML first (omnimodel doctor)")
    lib = ctypes.CDLL(str(path))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
    ]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def dequantize(lib: ctypes.CDLL, data: np.ndarray, qtype: str, n: int) -> np.ndarray:
    """GGML's C to_float of `n` elements held in `data` (uint8)."""
    fmt = get_format(qtype)
    if fmt.name == "F32":  # GGML has no converter for its native type: the bytes are the floats
        return np.ascontiguousarray(data, dtype=np.uint8).view(np.float32).reshape(-1)[:n].copy()
    traits = lib.ggml_get_type_traits(fmt.ggml_type).contents
    if not traits.to_float:
        raise ToolchainError(f"GGML has no to_float for {qtype}")
    src = np.ascontiguousarray(data, dtype=np.uint8)
    out = np.empty(n, dtype=np.float32)
    _TO_FLOAT(traits.to_float)(src.ctypes.data, out.ctypes.data, n)
    return out


def quantize(lib: ctypes.CDLL, w: np.ndarray, qtype: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """GGML's reference quantizer (`ggml_quantize_chunk`) on a [rows, cols] float32 matrix."""
    fmt = get_format(qtype)
    rows, cols = w.shape
    src = np.ascontiguousarray(w, dtype=np.float32)
    dst = np.empty(rows * fmt.row_bytes(cols), dtype=np.uint8)
    imat = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    lib.ggml_quantize_chunk(
        fmt.ggml_type, src.ctypes.data, dst.ctypes.data, 0, rows, cols, None if imat is None else imat.ctypes.data
    )
    return dst.reshape(rows, -1)


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


class _TensorHead(ctypes.Structure):
    """The leading fields of `struct ggml_tensor` (type, buffer, ne[4])."""

    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4)]


def read_gguf_c(lib: ctypes.CDLL, path: str | os.PathLike) -> dict[str, tuple[int, tuple[int, ...], bytes]]:
    """Every tensor of a GGUF file as GGML's C reader sees it: (type id, row-major shape, data bytes)."""
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GGUFInitParams]
    for fn, res in (
        ("gguf_get_n_tensors", ctypes.c_int64), ("gguf_get_tensor_offset", ctypes.c_size_t),
        ("gguf_get_tensor_name", ctypes.c_char_p), ("gguf_get_tensor_type", ctypes.c_int),
        ("gguf_get_tensor_size", ctypes.c_size_t),
    ):
        getattr(lib, fn).restype = res
        getattr(lib, fn).argtypes = [ctypes.c_void_p] + ([ctypes.c_int64] if fn != "gguf_get_n_tensors" else [])
    lib.gguf_get_data_offset.restype = ctypes.c_size_t
    lib.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    lib.ggml_get_tensor.restype = ctypes.POINTER(_TensorHead)
    lib.ggml_get_tensor.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    gctx = ctypes.c_void_p()
    ctx = lib.gguf_init_from_file(str(path).encode(), _GGUFInitParams(True, ctypes.pointer(gctx)))
    if not ctx:
        raise ToolchainError(f"{path}: GGML's gguf_init_from_file rejected the file")
    try:
        data_off = lib.gguf_get_data_offset(ctx)
        out = {}
        with open(path, "rb") as f:
            for i in range(lib.gguf_get_n_tensors(ctx)):
                name = lib.gguf_get_tensor_name(ctx, i)
                head = lib.ggml_get_tensor(gctx, name).contents
                ne = [int(x) for x in head.ne]
                while len(ne) > 1 and ne[-1] == 1:
                    ne.pop()
                f.seek(data_off + lib.gguf_get_tensor_offset(ctx, i))
                data = f.read(lib.gguf_get_tensor_size(ctx, i))
                out[name.decode()] = (int(lib.gguf_get_tensor_type(ctx, i)), tuple(reversed(ne)), data)
        return out
    finally:
        lib.gguf_free(ctx)
        if gctx.value:
            lib.ggml_free(gctx)
