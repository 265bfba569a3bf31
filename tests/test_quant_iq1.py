"""IQ1_S / IQ1_M encoders (the ternary grid types): the grid and bits, the delta sign, fixed scales, bad
input. Bit-exact decoding in ours, gguf-py and GGML's C, RMSE no worse than GGML's own quantizer and
importance run with the other grid types in test_quant_lattice.py (GRID_TYPES)."""

from __future__ import annotations

import gguf
import pytest
import torch
from conftest import quant_matrix

from omnimodel.errors import QuantError
from omnimodel.quant import SymmetricScales, decode, encode, get_format, iq1, lattice, supported_types

IQ1_TYPES = ["IQ1_S", "IQ1_M"]


@pytest.mark.parametrize("qtype", IQ1_TYPES)
def test_registered_with_the_ternary_grid_and_the_spec_bits(qtype):
    assert qtype in supported_types()
    g = lattice.grid(qtype)
    assert tuple(g.shape) == (2048, 8)
    assert set(torch.unique(g).tolist()) == {-1.0, 0.0, 1.0}
    assert get_format(qtype).bpw == {"IQ1_S": 1.5625, "IQ1_M": 1.75}[qtype]


def test_delta_sign_follows_the_data():
    # groups whose values sit at +-D + D/8 want delta = +1/8; at +-D - D/8, delta = -1/8
    g = lattice.grid("IQ1_M")
    pts = g[torch.randint(0, 2048, (64,), generator=torch.Generator().manual_seed(6))]  # 32 groups x 2 rows
    sign = torch.tensor([1.0, -1.0]).repeat(32)[:, None]  # alternate per group
    x = (0.01 * (pts + sign * iq1.DELTA)).reshape(2, 256)
    t = iq1.TYPES["IQ1_M"]
    _, _, idx, neg = iq1._unpack(t, encode(x, "IQ1_M").reshape(2, -1))
    assert torch.equal(neg.reshape(-1), (sign[:, 0] < 0))
    assert torch.equal(g[idx.reshape(-1)], pts)
    y = decode(encode(x, "IQ1_M"), "IQ1_M", (2, 256))
    assert torch.allclose(y, x, rtol=2e-3, atol=1e-6)
    # IQ1_S has one sign per 32 values: the encoder still reconstructs a sub-block that shares one
    xs = (0.01 * (pts + iq1.DELTA)).reshape(2, 256)
    assert torch.allclose(decode(encode(xs, "IQ1_S"), "IQ1_S", (2, 256)), xs, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("qtype", IQ1_TYPES)
def test_fixed_scales_are_honoured(qtype):
    t = iq1.TYPES[qtype]
    w = quant_matrix("gauss", 2, 512, seed=7)
    d = torch.full((2, 2), 0.05)
    sub = torch.randint(0, 8, (2, 2, t.nsub), generator=torch.Generator().manual_seed(8))
    data = encode(w, qtype, scales=SymmetricScales(d=d, sub=sub)).reshape(4, -1)
    got_d, got_codes, _, _ = iq1._unpack(t, data)
    assert torch.equal(got_d, torch.full((4,), 0.05).half().float())
    assert torch.equal(got_codes, sub.reshape(4, t.nsub).long())
    data = encode(w, qtype, scales=SymmetricScales(d=d)).reshape(4, -1)
    assert torch.equal(iq1._unpack(t, data)[0], torch.full((4,), 0.05).half().float())
    free = decode(data.reshape(2, -1), qtype, (2, 512))
    forced = decode(encode(w, qtype, scales=SymmetricScales(d=d, sub=sub)), qtype, (2, 512))
    assert (free - w).pow(2).sum() < (forced - w).pow(2).sum()


def test_fixed_scales_of_the_wrong_shape_are_refused():
    w = quant_matrix("gauss", 2, 256, seed=9)
    with pytest.raises(QuantError, match="sub-block codes"):
        encode(w, "IQ1_M", scales=SymmetricScales(d=torch.ones(2, 1), sub=torch.zeros(2, 1, 8)))


def test_bad_input_names_the_tensor():
    with pytest.raises(QuantError, match="row length 128") as info:
        encode(torch.randn(4, 128), "IQ1_S", name="blk.0.ffn_down.weight")
    assert "blk.0.ffn_down.weight" in str(info.value)


def test_gguf_type_ids_match():
    for q in IQ1_TYPES:
        assert get_format(q).ggml_type == int(gguf.GGMLQuantizationType[q])
