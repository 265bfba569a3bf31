"""Block encoders/decoders: bit-exact against gguf-py and GGML's C code, quality against GGML's quantizer."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from conftest import assert_decodes_like_gguf, decode_like_ggml_c, quant_matrix

from omnimodel.errors import QuantError
from omnimodel.quant import (
    AffineScales,
    SymmetricScales,
    decode,
    encode,
    get_format,
    ggml_ref,
    supported_types,
)

BLOCK_TYPES = ["Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS"]
ALL_TYPES = ["F32", "F16", "BF16", *BLOCK_TYPES]
R, C = 256, 4096  # quality matrices: small enough for seconds, wide enough for many super-blocks


def test_sizes_match_gguf_table():
    for t in ALL_TYPES:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t]]
        fmt = get_format(t)
        assert (fmt.block_size, fmt.type_size) == (block, size), t
    assert set(ALL_TYPES) <= set(supported_types())


@pytest.mark.parametrize("qtype", ALL_TYPES)
def test_bytes_decode_identically_in_ours_and_gguf(qtype):
    assert_decodes_like_gguf(qtype, max_rel=0.4)


@pytest.mark.parametrize("qtype", ALL_TYPES)
def test_bytes_decode_identically_in_ggml_c(ggml_lib, qtype):
    decode_like_ggml_c(ggml_lib, quant_matrix("gauss", 16, 512, seed=2), qtype)


@pytest.mark.parametrize("dist", ["gauss", "t3"])
@pytest.mark.parametrize("qtype", BLOCK_TYPES)
def test_rmse_at_most_ggml_reference(ggml_lib, qtype, dist):
    w = quant_matrix(dist, R, C, seed=3)
    ours = decode(encode(w, qtype), qtype, (R, C)).numpy()
    ref = ggml_ref.dequantize(ggml_lib, ggml_ref.quantize(ggml_lib, w.numpy(), qtype), qtype, R * C).reshape(R, C)
    e_ours = np.sqrt(np.mean((ours - w.numpy()) ** 2))
    e_ref = np.sqrt(np.mean((ref - w.numpy()) ** 2))
    assert e_ours <= 1.01 * e_ref, f"{qtype}/{dist}: RMSE ours {e_ours:.5f} vs GGML {e_ref:.5f} (limit 1.01x)"


@pytest.mark.parametrize("qtype", BLOCK_TYPES)
def test_weighted_error_below_ggml_imatrix(ggml_lib, qtype):
    w = quant_matrix("t3", 128, C, seed=4)
    g = torch.Generator().manual_seed(5)
    imatrix = (torch.rand(C, generator=g) * 2 + 0.1) ** 2
    imp = imatrix[None, :].expand_as(w).contiguous()
    ours = decode(encode(w, qtype, importance=imp), qtype, tuple(w.shape)).numpy()
    ref_bytes = ggml_ref.quantize(ggml_lib, w.numpy(), qtype, imatrix.numpy())
    ref = ggml_ref.dequantize(ggml_lib, ref_bytes, qtype, w.numel()).reshape(w.shape)
    e_ours = float((imp.numpy() * (ours - w.numpy()) ** 2).sum())
    e_ref = float((imp.numpy() * (ref - w.numpy()) ** 2).sum())
    assert e_ours < e_ref, f"{qtype}: weighted error ours {e_ours:.4f} vs GGML imatrix {e_ref:.4f}"


def test_importance_moves_error_to_unimportant_columns():
    w = quant_matrix("gauss", 64, 1024, seed=6)
    imp = torch.ones_like(w)
    imp[:, ::2] = 100.0
    plain = decode(encode(w, "Q3_K"), "Q3_K", tuple(w.shape))
    weighted = decode(encode(w, "Q3_K", importance=imp), "Q3_K", tuple(w.shape))
    err_imp_plain = (plain - w)[:, ::2].pow(2).mean()
    err_imp_weighted = (weighted - w)[:, ::2].pow(2).mean()
    assert err_imp_weighted < 0.8 * err_imp_plain


def test_fixed_symmetric_scales_are_honoured():
    w = quant_matrix("gauss", 4, 512, seed=7)
    d = torch.full((4, 2), 0.01)
    sub = torch.randint(-32, 32, (4, 2, 16), generator=torch.Generator().manual_seed(8))
    data = encode(w, "Q6_K", scales=SymmetricScales(d=d, sub=sub)).reshape(-1, 210)
    got_d = data[:, 208:210].contiguous().view(torch.float16).reshape(-1).float()
    assert torch.equal(got_d, torch.full((8,), 0.01).half().float())
    assert torch.equal(data[:, 192:208].contiguous().view(torch.int8).long(), sub.reshape(8, 16).long())


def test_fixed_affine_scales_are_honoured():
    w = quant_matrix("gauss", 2, 256, seed=9)
    sc = torch.arange(8).repeat(2, 1, 1) + 30
    m = torch.arange(8).repeat(2, 1, 1) + 10
    scales = AffineScales(d=torch.full((2, 1), 0.004), dmin=torch.full((2, 1), 0.03), sc=sc, m=m)
    data = encode(w, "Q4_K", scales=scales)
    y = decode(data, "Q4_K", (2, 256))
    # x = d*sc*q - dmin*m: every value of sub-block j lies on its own grid
    step = (torch.tensor(0.004).half().float() * sc.reshape(2, 8)).reshape(2, 8, 1)
    off = (torch.tensor(0.03).half().float() * m.reshape(2, 8)).reshape(2, 8, 1)
    q = (y.reshape(2, 8, 32) + off) / step
    assert torch.allclose(q, q.round(), atol=1e-3) and q.min() >= -1e-3 and q.max() <= 15 + 1e-3


@pytest.mark.parametrize(
    "w, imp, match",
    [
        (torch.randn(4, 100), None, "row length 100"),
        (torch.tensor([[float("nan")] * 256]), None, "NaN or Inf"),
        (torch.tensor([[float("inf")] * 256]), None, "NaN or Inf"),
        (torch.randn(4, 256), torch.ones(4, 128), "importance has shape"),
    ],
)
def test_bad_input_names_the_tensor(w, imp, match):
    with pytest.raises(QuantError, match=match) as info:
        encode(w, "Q4_K", importance=imp, name="blk.0.attn_q.weight")
    assert "blk.0.attn_q.weight" in str(info.value)


