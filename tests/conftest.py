"""Shared test helpers: `require` skips on a user's machine but fails in CI (OMNIMODEL_REQUIRE_ALL=1)."""

from __future__ import annotations

import os

import pytest


def require(condition: bool, what: str) -> None:
    """Skip the test when `condition` is false, unless OMNIMODEL_REQUIRE_ALL=1, where it fails."""
    if condition:
        return
    if os.environ.get("OMNIMODEL_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI but missing: {what}")
    pytest.skip(f"missing: {what}")


# ---------------------------------------------------------------- shared by the quantizer tests
def quant_matrix(dist: str, rows: int, cols: int, seed: int = 0):
    """A seeded test matrix: 'gauss' or Student-t(3) ('t3' = N / sqrt(chi2_3 / 3))."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = torch.randn(rows, cols, generator=g)
    if dist == "gauss":
        return n
    return n / (torch.randn(rows, cols, 3, generator=g).pow(2).sum(-1) / 3).sqrt()


@pytest.fixture(scope="session")
def ggml_lib():
    """GGML's CPU library (built if missing) through ctypes."""
    from omnimodel.quant import ggml_ref

    lib_dir = ggml_ref.find_lib_dir(build=True)
    require(lib_dir is not None, "a GGML CPU build with libggml-base.so (set OMNIMODEL_GGML_LIB_DIR)")
    return ggml_ref.load(str(lib_dir))


def assert_decodes_like_gguf(qtype: str, max_rel: float) -> None:
    """Our bytes of an 8x1024 t3 matrix decode identically through our decoder and gguf.quants; the error is sane."""
    import gguf
    import numpy as np
    import torch

    from omnimodel.quant import decode, encode, get_format

    w = quant_matrix("t3", 8, 1024, seed=1) * 0.05
    data = encode(w, qtype)
    assert data.dtype == torch.uint8 and tuple(data.shape) == (8, get_format(qtype).row_bytes(1024))
    ours = decode(data, qtype, (8, 1024)).numpy()
    ref = gguf.quants.dequantize(data.numpy(), gguf.GGMLQuantizationType[qtype]).reshape(8, 1024)
    np.testing.assert_array_equal(ours, ref)
    rel = np.linalg.norm(ours - w.numpy()) / np.linalg.norm(w.numpy())
    assert rel < max_rel, f"{qtype}: relative error {rel:.3f} means the layout is wrong"


def decode_like_ggml_c(lib, w, qtype: str):
    """Encode `w`, decode it with ours and with GGML's C to_float; assert equality, return ours (rows, cols)."""
    import numpy as np

    from omnimodel.quant import decode, encode, ggml_ref

    data = encode(w, qtype)
    ours = decode(data, qtype, tuple(w.shape)).numpy().reshape(-1)
    np.testing.assert_array_equal(ours, ggml_ref.dequantize(lib, data.numpy(), qtype, w.numel()))
    return ours.reshape(tuple(w.shape))
