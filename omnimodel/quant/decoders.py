"""Block decoders: GGML bytes back to float32, vectorised with torch (CPU or CUDA)."""

from __future__ import annotations

import torch

from omnimodel.errors import QuantError
from omnimodel.quant.encoders import IQ4_VALUES
from omnimodel.quant.formats import get_format


def _f16(b: torch.Tensor) -> torch.Tensor:
    """[N, 2] bytes -> [N] float32."""
    return b.contiguous().view(torch.float16).reshape(-1).to(torch.float32)


def _dec_q8_0(b):
    return _f16(b[:, 0:2])[:, None] * b[:, 2:].contiguous().view(torch.int8).to(torch.float32)


def _iq4_vals(idx: torch.Tensor) -> torch.Tensor:
    return torch.tensor(IQ4_VALUES, dtype=torch.float32, device=idx.device)[idx.long()]


def _unpack_nibbles32(qs: torch.Tensor) -> torch.Tensor:
    """[N, 16] bytes -> [N, 32] codes (low nibbles first)."""
    return torch.cat([qs & 15, qs >> 4], dim=1)


def _dec_iq4_nl(b):
    return _f16(b[:, 0:2])[:, None] * _iq4_vals(_unpack_nibbles32(b[:, 2:18]))


def _dec_q6_k(b):
    ql, qh, sc, d = b[:, 0:128], b[:, 128:192], b[:, 192:208], _f16(b[:, 208:210])
    ql = ql.reshape(-1, 2, 2, 32)
    qh = qh.reshape(-1, 2, 32)
    low = torch.stack([ql[:, :, 0] & 15, ql[:, :, 1] & 15, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], dim=2)
    high = torch.stack([(qh >> (2 * k)) & 3 for k in range(4)], dim=2)
    q = (low | (high << 4)).to(torch.float32) - 32  # [N, 2, 4, 32]
    s = sc.contiguous().view(torch.int8).to(torch.float32).reshape(-1, 16)
    return (d[:, None, None] * s[:, :, None] * q.reshape(-1, 16, 16)).reshape(-1, 256)


def _dec_q3_k(b):
    hmask, qs, sc, d = b[:, 0:32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    qs = qs.reshape(-1, 2, 32)
    low = torch.stack([(qs >> (2 * k)) & 3 for k in range(4)], dim=2).reshape(-1, 8, 32)
    high = torch.stack([(hmask >> k) & 1 for k in range(8)], dim=1)  # [N, 8, 32]
    q = (low | (high << 2)).to(torch.float32) - 4
    lo = torch.cat([sc[:, 0:8] & 15, sc[:, 0:8] >> 4], dim=1)  # [N, 16]
    hb = sc[:, 8:12]
    hi = torch.cat([(hb >> (2 * k)) & 3 for k in range(4)], dim=1)  # j = 4k + i
    s = (lo | (hi << 4)).to(torch.float32) - 32
    return (d[:, None, None] * s[:, :, None] * q.reshape(-1, 16, 16)).reshape(-1, 256)


def _unpack_k4_scales(sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s_lo = sc[:, 0:4] & 63
    m_lo = sc[:, 4:8] & 63
    s_hi = (sc[:, 8:12] & 15) | ((sc[:, 0:4] >> 6) << 4)
    m_hi = (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)
    return torch.cat([s_lo, s_hi], 1).to(torch.float32), torch.cat([m_lo, m_hi], 1).to(torch.float32)


def _dec_q4_k(b):
    d, dm = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    s, m = _unpack_k4_scales(b[:, 4:16])
    qs = b[:, 16:144].reshape(-1, 4, 32)
    q = torch.stack([qs & 15, qs >> 4], dim=2).reshape(-1, 8, 32).to(torch.float32)
    y = d[:, None, None] * s[:, :, None] * q - (dm[:, None] * m)[:, :, None]
    return y.reshape(-1, 256)


def _dec_q5_k(b):
    d, dm = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    s, m = _unpack_k4_scales(b[:, 4:16])
    qh = b[:, 16:48]
    qs = b[:, 48:176].reshape(-1, 4, 32)
    low = torch.stack([qs & 15, qs >> 4], dim=2).reshape(-1, 8, 32)
    high = torch.stack([(qh >> k) & 1 for k in range(8)], dim=1)
    q = (low | (high << 4)).to(torch.float32)
    y = d[:, None, None] * s[:, :, None] * q - (dm[:, None] * m)[:, :, None]
    return y.reshape(-1, 256)


def _dec_q2_k(b):
    sc, qs, d, dm = b[:, 0:16], b[:, 16:80], _f16(b[:, 80:82]), _f16(b[:, 82:84])
    qs = qs.reshape(-1, 2, 32)
    q = torch.stack([(qs >> (2 * k)) & 3 for k in range(4)], dim=2).reshape(-1, 16, 16).to(torch.float32)
    s, m = (sc & 15).to(torch.float32), (sc >> 4).to(torch.float32)
    y = d[:, None, None] * s[:, :, None] * q - (dm[:, None] * m)[:, :, None]
    return y.reshape(-1, 256)


def _dec_iq4_xs(b):
    d = _f16(b[:, 0:2])
    sh = b[:, 2].to(torch.int32) | (b[:, 3].to(torch.int32) << 8)
    sl = b[:, 4:8]
    lo = torch.stack([sl & 15, sl >> 4], dim=2).reshape(-1, 8).to(torch.int32)
    hi = torch.stack([(sh >> (2 * ib)) & 3 for ib in range(8)], dim=1)
    s = (lo | (hi << 4)).to(torch.float32) - 32
    q = _iq4_vals(_unpack_nibbles32(b[:, 8:136].reshape(-1, 16))).reshape(-1, 8, 32)
    return (d[:, None, None] * s[:, :, None] * q).reshape(-1, 256)


_BLOCK_DECODERS = {
    "Q8_0": _dec_q8_0,
    "IQ4_NL": _dec_iq4_nl,
    "Q6_K": _dec_q6_k,
    "Q5_K": _dec_q5_k,
    "Q4_K": _dec_q4_k,
    "Q3_K": _dec_q3_k,
    "Q2_K": _dec_q2_k,
    "IQ4_XS": _dec_iq4_xs,
}


def decode(data: torch.Tensor, qtype: str, shape: tuple[int, int]) -> torch.Tensor:
    """Decode GGML bytes of type `qtype` holding a [rows, cols] matrix to float32."""
    fmt = get_format(qtype)
    rows, cols = shape
    data = data.reshape(-1).to(torch.uint8)
    if data.numel() != rows * fmt.row_bytes(cols) or cols % fmt.block_size:
        raise QuantError(f"{fmt.name} data of {data.numel()} bytes does not hold a {rows}x{cols} matrix")
    if fmt.name == "F32":
        return data.contiguous().view(torch.float32).reshape(rows, cols).clone()
    if fmt.name in ("F16", "BF16"):
        dt = torch.float16 if fmt.name == "F16" else torch.bfloat16
        return data.contiguous().view(dt).reshape(rows, cols).to(torch.float32)
    blocks = data.reshape(-1, fmt.type_size)
    if fmt.name in _BLOCK_DECODERS:
        y = _BLOCK_DECODERS[fmt.name](blocks)
    else:
        from omnimodel.quant import lattice

        grid_types = lattice.grid_decoders()
        if fmt.name not in grid_types:
            raise QuantError(f"no decoder for {fmt.name} yet")
        y = grid_types[fmt.name](blocks)
    return y.reshape(rows, cols)
