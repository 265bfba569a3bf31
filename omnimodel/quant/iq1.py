"""IQ1_S and IQ1_M encoders and decoders: the ternary lattice types (1.5625 and 1.75 bits per weight).

Every group of 8 values is one point g of a 2048-point grid with coordinates in {-1, 0, 1} (read from
the installed `gguf` package), shifted by delta = +-1/8 and scaled: y = D (g + delta), D = d (2l + 1)
with a 3-bit code l. There are no sign bits: the grid holds both signs.

- IQ1_S, 50 bytes per 256 values: f16 d; per group the low 8 index bits; per sub-block of 32 one
  uint16 with the four groups' high 3 index bits, the code (bits 12-14) and the delta sign (bit 15).
- IQ1_M, 56 bytes: per group the low 8 index bits; per group a nibble (high 3 index bits, delta sign
  in bit 3); a 3-bit code per 16 values, four to each of four uint16 words whose top nibbles hold the
  16 bits of the f16 d.

The search follows the lattice types' (omnimodel.quant.lattice): for each sub-block a free scale from
a few starting points, each refit by weighted least squares over (g + delta); then d maps the
largest scale to code 7, and each sub-block takes the best code within +-1 of its rounded one. The
delta sign is chosen with the grid point: per sub-block (IQ1_S) or per group (IQ1_M).
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import torch

from omnimodel.errors import QuantError
from omnimodel.quant.lattice import Lattice, _assign, _f16, _f16_bytes, _from_le, _le_bytes, _u8, grid
from omnimodel.quant.scales import SymmetricScales
from omnimodel.quant.search import _safe_div, f16

QK = 256
DELTA = float(gguf.quants.IQ1_S.delta)  # 1/8, the same for IQ1_M
_SCALE_TRIES = (1.0, 1.3, 1.6, 1.9, 2.2, 2.6)  # sub-block scale = amax / (try * (1 + delta))


@dataclass(frozen=True)
class Ternary:
    """One ternary type: values per 3-bit scale code and per delta sign."""

    name: str
    sub: int  # values per scale code
    dgroup: int  # values per delta sign

    @property
    def nsub(self) -> int:
        """Scale codes per super-block."""
        return QK // self.sub

    @property
    def lattice(self) -> Lattice:
        """The grid search's view of the type (8 values per point, signs in the grid)."""
        return Lattice(self.name, 8, self.sub, 1.0, False)


TYPES = {"IQ1_S": Ternary("IQ1_S", 32, 32), "IQ1_M": Ternary("IQ1_M", 16, 8)}


def _fit(t: Ternary, xv, wv, D):
    """Grid indices [S, nsub, k], delta signs [S, nsub, k] (True = -delta) and weighted errors
    [S, nsub] of each sub-block at scale D [S, nsub]."""
    S, _, k, _ = xv.shape
    Dg = D[..., None].expand(S, t.nsub, k)
    res = []
    for sgn in (1.0, -1.0):
        xs = xv - (Dg * (sgn * DELTA))[..., None]
        idx, gain = _assign(t.lattice, xs.reshape(-1, 8), wv.reshape(-1, 8), Dg.reshape(-1))
        res.append((idx.reshape(S, t.nsub, k), (wv * xs * xs).sum(-1) - gain.reshape(S, t.nsub, k)))
    (i0, e0), (i1, e1) = res
    neg = (e1.sum(-1) < e0.sum(-1))[..., None].expand_as(e0) if t.dgroup == t.sub else e1 < e0
    return torch.where(neg, i1, i0), neg, torch.where(neg, e1, e0).sum(-1)


def _points(t: Ternary, idx, neg, device) -> torch.Tensor:
    """g + delta [S, nsub, k, 8] for grid indices and delta signs."""
    g = grid(t.name, str(device))[idx]
    return g + torch.where(neg, -DELTA, DELTA)[..., None]


def _refit(t: Ternary, xv, wv, idx, neg):
    """Least-squares sub-block scale for fixed points, and the error it reaches."""
    v = _points(t, idx, neg, xv.device)
    sxv = (wv * xv * v).sum((-1, -2))
    svv = (wv * v * v).sum((-1, -2))
    s = _safe_div(sxv, svv).clamp(min=0)
    return s, (wv * xv * xv).sum((-1, -2)) - 2 * s * sxv + s * s * svv


def _codes_for(s, d):
    return torch.round((_safe_div(s, d[:, None]) - 1) * 0.5).clamp(0, 7)


def _choose(t: Ternary, xv, wv, d, l0, spread: int):
    """Best code in l0-spread..l0+spread per sub-block at super-block scale d [S]."""
    best = None
    for delta in range(-spread, spread + 1):
        lc = (l0 + delta).clamp(0, 7)
        idx, neg, err = _fit(t, xv, wv, d[:, None] * (2 * lc + 1))
        if best is None:
            best = [lc, idx, neg, err]
            continue
        b = err < best[3]
        best = [torch.where(b, lc, best[0]), torch.where(b[..., None], idx, best[1]),
                torch.where(b[..., None], neg, best[2]), torch.where(b, err, best[3])]  # fmt: skip
    return best


def search(t: Ternary, x: torch.Tensor, w: torch.Tensor, fixed: SymmetricScales | None = None):
    """f16 d [S], codes [S, nsub], grid indices [S, nsub, k] and delta signs [S, nsub, k] for x [S, 256]."""
    S = x.shape[0]
    k = t.sub // 8
    xv = x.reshape(S, t.nsub, k, 8)
    wv = w.reshape(S, t.nsub, k, 8)
    amax = x.abs().reshape(S, t.nsub, -1).amax(-1)
    if fixed is not None:
        d = f16(fixed.d.reshape(-1).to(x))
        if fixed.sub is None:
            codes, idx, neg, _ = _choose(t, xv, wv, d, _codes_for(amax / (1.6 * (1 + DELTA)), d), 3)
        else:
            codes = fixed.sub.reshape(S, t.nsub).to(x).round().clamp(0, 7)
            idx, neg, _ = _fit(t, xv, wv, d[:, None] * (2 * codes + 1))
        return d, codes, idx, neg
    best_s = torch.zeros_like(amax)
    best_err = torch.full_like(amax, float("inf"))
    for r in _SCALE_TRIES:
        idx, neg, _ = _fit(t, xv, wv, amax / (r * (1 + DELTA)))
        s, err = _refit(t, xv, wv, idx, neg)
        b = err < best_err
        best_s, best_err = torch.where(b, s, best_s), torch.where(b, err, best_err)
    d = f16(best_s.amax(-1) / 15.0)
    codes, idx, neg, _ = _choose(t, xv, wv, d, _codes_for(best_s, d), 1)
    return d, codes, idx, neg


# ----------------------------------------------------------------- packing
def _pack(t: Ternary, d, codes, idx, neg) -> torch.Tensor:
    S = d.shape[0]
    idx = idx.to(torch.int64).reshape(S, -1)  # [S, 32] groups in order
    codes = codes.to(torch.int64)
    hi = idx >> 8
    if t.name == "IQ1_S":
        h4 = hi.reshape(S, 8, 4)
        qh = h4[..., 0] | (h4[..., 1] << 3) | (h4[..., 2] << 6) | (h4[..., 3] << 9)
        qh = qh | (codes << 12) | (neg[..., 0].to(torch.int64) << 15)
        return torch.cat([_f16_bytes(d), _u8(idx & 255), _le_bytes(qh[..., None], 2).reshape(S, -1)], dim=1)
    nib = (hi | (neg.reshape(S, -1).to(torch.int64) << 3)).reshape(S, 16, 2)
    qh = nib[..., 0] | (nib[..., 1] << 4)
    dbits = d.to(torch.float16).contiguous().view(torch.int16).to(torch.int64) & 0xFFFF  # [S]
    c4 = codes.reshape(S, 4, 4)
    sc = c4[..., 0] | (c4[..., 1] << 3) | (c4[..., 2] << 6) | (c4[..., 3] << 9)
    sc = sc | (((dbits[:, None] >> (4 * torch.arange(4, device=d.device))) & 15) << 12)
    return torch.cat([_u8(idx & 255), _u8(qh), _le_bytes(sc[..., None], 2).reshape(S, -1)], dim=1)


def _unpack(t: Ternary, b: torch.Tensor):
    """Block bytes -> d [N], codes [N, nsub], grid indices [N, 32], delta signs [N, 32] (per group)."""
    N = b.shape[0]
    if t.name == "IQ1_S":
        d = _f16(b[:, 0:2])
        qh = _from_le(b[:, 34:50], 2)  # [N, 8]
        hi = torch.stack([(qh >> (3 * j)) & 7 for j in range(4)], dim=-1).reshape(N, 32)
        neg = ((qh >> 15) & 1).bool()[..., None].expand(N, 8, 4).reshape(N, 32)
        return d, (qh >> 12) & 7, b[:, 2:34].to(torch.int64) | (hi << 8), neg
    qh = b[:, 32:48].to(torch.int64)
    nib = torch.stack([qh & 15, qh >> 4], dim=-1).reshape(N, 32)
    sc = _from_le(b[:, 48:56], 2)  # [N, 4]
    dbits = ((sc >> 12) << (4 * torch.arange(4, device=b.device))).sum(-1)
    d = dbits.to(torch.int16).view(torch.float16).to(torch.float32)  # low 16 bits as f16
    codes = torch.stack([(sc >> (3 * j)) & 7 for j in range(4)], dim=-1).reshape(N, 16)
    return d, codes, b[:, 0:32].to(torch.int64) | ((nib & 7) << 8), (nib >> 3).bool()


def _encoder(name: str):
    t = TYPES[name]

    def enc(x: torch.Tensor, w: torch.Tensor, scales) -> torch.Tensor:
        if scales is not None and scales.sub is not None and scales.sub.numel() != x.shape[0] * t.nsub:
            raise QuantError(f"{name} takes {t.nsub} sub-block codes per super-block, got {tuple(scales.sub.shape)}")
        return _pack(t, *search(t, x, w, scales))

    return enc


def _decoder(name: str):
    t = TYPES[name]

    def dec(b: torch.Tensor) -> torch.Tensor:
        d, codes, idx, neg = _unpack(t, b)
        N = b.shape[0]
        v = grid(name, str(b.device))[idx] + torch.where(neg, -DELTA, DELTA)[..., None]  # [N, 32, 8]
        D = d[:, None] * (2 * codes.to(torch.float32) + 1)  # [N, nsub]
        return (D[..., None] * v.reshape(N, t.nsub, -1)).reshape(N, QK)

    return dec


IQ1_ENCODERS: dict = {n: _encoder(n) for n in TYPES}
IQ1_DECODERS: dict = {n: _decoder(n) for n in TYPES}
