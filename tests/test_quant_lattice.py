"""Lattice encoders (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S; the ternary IQ1_S / IQ1_M where marked
GRID_TYPES, their own tests in test_quant_iq1.py): bit-exact decoding in ours, gguf-py and GGML's C;
RMSE against GGML's quantizer with an imatrix of ones; importance; fixed scales; bad input."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from conftest import assert_decodes_like_gguf, decode_like_ggml_c, quant_matrix

from omnimodel.errors import QuantError
from omnimodel.quant import SymmetricScales, decode, encode, ggml_ref, lattice, supported_types

LATTICE_TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"]
GRID_TYPES = [*LATTICE_TYPES, "IQ1_S", "IQ1_M"]  # every type whose groups are points of a gguf grid
R, C = 256, 4096
# our RMSE may be at most this multiple of GGML's (issue 4: 1.05x for the lattice types; the IQ1
# types no worse than GGML's)
RMSE_LIMIT = dict.fromkeys(LATTICE_TYPES, 1.05) | {"IQ1_S": 1.0, "IQ1_M": 1.0}
# largest relative error of the 8x1024 t3 matrix of the gguf decoding check
MAX_REL = dict.fromkeys(LATTICE_TYPES, 0.6) | {"IQ1_S": 0.7, "IQ1_M": 0.7}


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("qtype", LATTICE_TYPES)
def test_registered_and_grid_read_from_gguf(qtype):
    assert qtype in supported_types()
    cls = getattr(gguf.quants, qtype)
    g = lattice.grid(qtype)
    assert tuple(g.shape) == tuple(cls.grid_shape)
    assert set(torch.unique(g).tolist()) <= {float(v) for v in cls.grid_map}
    assert len({tuple(r) for r in g.tolist()}) == g.shape[0], "grid points must be distinct"


def test_actquant_candidates_include_the_lattice_types():
    from actquant_plugin.allocate import available_candidates

    have = available_candidates()
    assert {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS"} <= set(have)


@pytest.mark.parametrize("qtype", GRID_TYPES)
def test_bytes_decode_identically_in_ours_and_gguf(qtype):
    assert_decodes_like_gguf(qtype, max_rel=MAX_REL[qtype])


@pytest.mark.parametrize("qtype", GRID_TYPES)
def test_bytes_decode_identically_in_ggml_c(ggml_lib, qtype):
    w = quant_matrix("gauss", 16, 512, seed=2)
    w[3] = 0.0  # an all-zero row: d = 0 blocks
    ours = decode_like_ggml_c(ggml_lib, w, qtype)
    assert not ours[3].any()


@pytest.mark.parametrize("dist", ["gauss", "t3"])
@pytest.mark.parametrize("qtype", GRID_TYPES)
def test_rmse_within_ggml_reference(ggml_lib, qtype, dist):
    w = quant_matrix(dist, R, C, seed=3)
    ours = decode(encode(w, qtype), qtype, (R, C)).numpy()
    ref_bytes = ggml_ref.quantize(ggml_lib, w.numpy(), qtype, np.ones(C, np.float32))
    ref = ggml_ref.dequantize(ggml_lib, ref_bytes, qtype, R * C).reshape(R, C)
    e_ours, e_ref = _rmse(ours, w.numpy()), _rmse(ref, w.numpy())
    assert e_ours <= RMSE_LIMIT[qtype] * e_ref, (
        f"{qtype}/{dist}: RMSE ours {e_ours:.5f} vs GGML {e_ref:.5f} (limit {RMSE_LIMIT[qtype]}x)"
    )


@pytest.mark.parametrize("qtype", GRID_TYPES)
def test_importance_lowers_weighted_error(ggml_lib, qtype):
    w = quant_matrix("t3", 64, C, seed=4)
    g = torch.Generator().manual_seed(5)
    imatrix = (torch.rand(C, generator=g) * 2 + 0.1) ** 2
    imp = imatrix[None, :].expand_as(w).contiguous()

    def werr(y: np.ndarray) -> float:
        return float((imp.numpy() * (y - w.numpy()) ** 2).sum())

    weighted = werr(decode(encode(w, qtype, importance=imp), qtype, tuple(w.shape)).numpy())
    plain = werr(decode(encode(w, qtype), qtype, tuple(w.shape)).numpy())
    ref_bytes = ggml_ref.quantize(ggml_lib, w.numpy(), qtype, imatrix.numpy())
    ggml = werr(ggml_ref.dequantize(ggml_lib, ref_bytes, qtype, w.numel()).reshape(w.shape))
    assert weighted < 0.97 * plain, (
        f"{qtype}: weighted error with importance {weighted:.2f}, without {plain:.2f}"
    )
    assert weighted < ggml, f"{qtype}: weighted error ours {weighted:.2f} vs GGML imatrix {ggml:.2f}"


@pytest.mark.parametrize("qtype", LATTICE_TYPES)
def test_fixed_scales_are_honoured(qtype):
    lat = lattice.LATTICES[qtype]
    w = quant_matrix("gauss", 2, 512, seed=7)
    d = torch.full((2, 2), 0.02)
    sub = torch.randint(0, 16, (2, 2, lat.nsub), generator=torch.Generator().manual_seed(8))
    data = encode(w, qtype, scales=SymmetricScales(d=d, sub=sub)).reshape(4, -1)
    got_d, got_codes, _, _ = lattice._unpack(lat, data)
    assert torch.equal(got_d, torch.full((4,), 0.02).half().float())
    assert torch.equal(got_codes, sub.reshape(4, lat.nsub).long())
    # with d fixed and the codes free, the codes are chosen and d is kept
    data = encode(w, qtype, scales=SymmetricScales(d=d)).reshape(4, -1)
    got_d, got_codes, _, _ = lattice._unpack(lat, data)
    assert torch.equal(got_d, torch.full((4,), 0.02).half().float())
    free = decode(data.reshape(2, -1), qtype, (2, 512))
    forced = decode(encode(w, qtype, scales=SymmetricScales(d=d, sub=sub)), qtype, (2, 512))
    assert (free - w).pow(2).sum() < (forced - w).pow(2).sum()


def test_fixed_scales_of_the_wrong_shape_are_refused():
    w = quant_matrix("gauss", 2, 256, seed=9)
    with pytest.raises(QuantError, match="sub-block codes"):
        encode(w, "IQ2_XS", scales=SymmetricScales(d=torch.ones(2, 1), sub=torch.zeros(2, 1, 8)))


@pytest.mark.parametrize(
    "w, imp, match",
    [
        (torch.randn(4, 128), None, "row length 128"),
        (torch.tensor([[float("nan")] * 256]), None, "NaN or Inf"),
        (torch.tensor([[float("inf")] * 256]), None, "NaN or Inf"),
        (torch.randn(4, 256), torch.ones(4, 128), "importance has shape"),
    ],
)
@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ3_S"])
def test_bad_input_names_the_tensor(qtype, w, imp, match):
    with pytest.raises(QuantError, match=match) as info:
        encode(w, qtype, importance=imp, name="blk.0.ffn_down.weight")
    assert "blk.0.ffn_down.weight" in str(info.value)
