"""Lattice (IQ2/IQ3) encoders and decoders; grids come from the installed `gguf` package.

Every lattice type stores, per super-block of 256, an f16 `d`, a 4-bit code `l` per sub-block
(sub-block scale D = d * (0.5 + l) * mul), and per group of 8 (IQ2) or 4 (IQ3) values an index
into a small grid of non-negative points plus sign bits. IQ2_XXS, IQ2_XS and IQ3_XXS keep only 7
sign bits per 8 values (the 8th makes the count of negatives even); IQ2_S and IQ3_S store all 8.

The search is vectorised over all groups at once: the nearest grid point of a group under the
importance-weighted distance is an argmax of one matmul of the group against the whole grid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import gguf
import torch

from omnimodel.errors import QuantError
from omnimodel.quant.scales import SymmetricScales
from omnimodel.quant.search import _safe_div, f16

QK = 256
_SCORE_ELEMS = 1 << 23
# grid points searched for an off-grid group on CPU, for grids larger than 256 points (0: the whole
# grid, one matmul; CUDA always searches the whole grid, where the matmul is cheap)
NEIGHBOURS = 12  # bound on the [groups, grid] score matrix of one matmul (32 MiB of f32)


@dataclass(frozen=True)
class Lattice:
    """One lattice type: grid shape, sub-block length, scale multiplier and sign storage."""

    name: str
    dim: int  # values per grid point
    sub: int  # values per 4-bit sub-block scale
    mul: float  # D = d * (0.5 + l) * mul
    parity: bool  # True: 7 stored sign bits per 8 values, even number of negatives

    @property
    def nsub(self) -> int:
        """Sub-blocks per super-block."""
        return QK // self.sub


LATTICES = {
    "IQ2_XXS": Lattice("IQ2_XXS", 8, 32, 0.25, True),
    "IQ2_XS": Lattice("IQ2_XS", 8, 16, 0.25, True),
    "IQ2_S": Lattice("IQ2_S", 8, 16, 0.25, False),
    "IQ3_XXS": Lattice("IQ3_XXS", 4, 32, 0.5, True),
    "IQ3_S": Lattice("IQ3_S", 4, 32, 2.0, False),
}


@functools.lru_cache(maxsize=16)
def grid(name: str, device: str = "cpu") -> torch.Tensor:
    """The type's grid points [G, dim] as float32 values (read from gguf.quants at run time)."""
    cls = getattr(gguf.quants, name)
    cls.init_grid()
    g = torch.from_numpy(cls.grid.reshape(cls.grid_shape).astype("float32").copy())
    return g.to(device)


@functools.lru_cache(maxsize=16)
def _grid_mat(name: str, device: str) -> torch.Tensor:
    g = grid(name, device)
    return torch.cat([g.T, (g * g).T], dim=0).contiguous()  # [2*dim, G]


# ----------------------------------------------------------------- search
@functools.lru_cache(maxsize=16)
def _on_grid_table(name: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's distinct coordinate values, and a table from per-coordinate level codes to grid index (-1: off grid)."""
    g = grid(name, device)
    vals = torch.unique(g)
    lvl = torch.searchsorted(vals, g)  # [G, dim]
    radix = len(vals) ** torch.arange(g.shape[1], device=g.device)
    table = torch.full((len(vals) ** g.shape[1],), -1, dtype=torch.long, device=g.device)
    table[(lvl * radix).sum(-1)] = torch.arange(g.shape[0], device=g.device)
    return vals, table


def _gain(lat: Lattice, xv, wv, s, idx):
    g = grid(lat.name, str(xv.device))[idx]
    return (wv * g * (2 * s[:, None] * xv - (s * s)[:, None] * g)).sum(-1)


def _assign_full(lat: Lattice, xv, wv, s) -> tuple[torch.Tensor, torch.Tensor]:
    B = _grid_mat(lat.name, str(xv.device))
    G = B.shape[1]
    A = torch.cat([(2 * s)[:, None] * wv * xv, -(s * s)[:, None] * wv], dim=1)
    N = A.shape[0]
    idx = torch.empty(N, dtype=torch.long, device=xv.device)
    gain = torch.empty(N, dtype=xv.dtype, device=xv.device)
    step = max(1, _SCORE_ELEMS // G)
    for a in range(0, N, step):
        g, i = (A[a : a + step] @ B).max(dim=1)
        idx[a : a + step], gain[a : a + step] = i, g
    return idx, gain


@functools.lru_cache(maxsize=16)
def _neighbours(name: str, device: str, k: int) -> torch.Tensor:
    """For every combination of per-coordinate levels, its k nearest grid points [levels**dim, k]."""
    g = grid(name, device)
    vals, table = _on_grid_table(name, device)
    radix = len(vals) ** torch.arange(g.shape[1], device=g.device)
    combos = vals[(torch.arange(len(table), device=g.device)[:, None] // radix) % len(vals)]
    return torch.cdist(combos, g).topk(k, dim=1, largest=False).indices


def _assign_near(lat: Lattice, xv, wv, s, key) -> tuple[torch.Tensor, torch.Tensor]:
    nb = _neighbours(lat.name, str(xv.device), NEIGHBOURS)
    gr = grid(lat.name, str(xv.device))
    N = xv.shape[0]
    idx = torch.empty(N, dtype=torch.long, device=xv.device)
    gain = torch.empty(N, dtype=xv.dtype, device=xv.device)
    step = max(1, _SCORE_ELEMS // (NEIGHBOURS * lat.dim))
    for a in range(0, N, step):
        cand = nb[key[a : a + step]]  # [n, K]
        g = gr[cand]  # [n, K, dim]
        sl = s[a : a + step, None, None]
        sc = (wv[a : a + step, None] * g * (2 * sl * xv[a : a + step, None] - sl * sl * g)).sum(-1)
        best, j = sc.max(dim=1)
        idx[a : a + step], gain[a : a + step] = cand.gather(1, j[:, None]).squeeze(1), best
    return idx, gain


def _assign(
    lat: Lattice, xv: torch.Tensor, wv: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest grid point of each group xv [N, dim] at scale s [N]: index and gain (sum w x^2 - error).

    The weighted distance is separable per coordinate, so where the per-coordinate nearest levels
    form a grid point that point is the answer; the other groups search the whole grid (one matmul)
    or, on CPU for the larger grids, the NEIGHBOURS grid points nearest to their level combination.
    """
    vals, table = _on_grid_table(lat.name, str(xv.device))
    t = xv * _safe_div(torch.ones_like(s), s)[:, None]
    lvl = torch.bucketize(t.contiguous(), (vals[1:] + vals[:-1]) * 0.5)
    radix = len(vals) ** torch.arange(lat.dim, device=xv.device)
    key = (lvl * radix).sum(-1)
    idx = table[key]
    off = (idx < 0).nonzero().squeeze(1)
    if off.numel():
        if NEIGHBOURS and xv.device.type == "cpu" and len(grid(lat.name)) > 256:
            idx[off], _ = _assign_near(lat, xv[off], wv[off], s[off], key[off])
        else:
            idx[off], _ = _assign_full(lat, xv[off], wv[off], s[off])
    return idx, _gain(lat, xv, wv, s, idx)


def _signs(lat: Lattice, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign bits [S, 256] (True = negative) and the values the grid must fit (|x|, or -|x| where flipped)."""
    neg = x < 0
    xa = x.abs()
    if not lat.parity:
        return neg, xa
    S = x.shape[0]
    n8 = neg.reshape(S, -1, 8)
    odd = n8.sum(-1) % 2 == 1
    # flip the sign of the value that costs least to get wrong, so the count of negatives is even
    imin = (w * x * x).reshape(S, -1, 8).argmin(-1)
    flip = torch.zeros_like(n8)
    flip.scatter_(-1, imin[..., None], odd[..., None])
    flip = flip.reshape(S, -1)
    return neg ^ flip, torch.where(flip, -xa, xa)


def _fit_subs(lat: Lattice, xv, wv, D):
    """Grid indices [S, nsub, k] and weighted errors [S, nsub] of each sub-block at scale D [S, nsub]."""
    S = xv.shape[0]
    k = lat.sub // lat.dim
    s = D[..., None].expand(S, lat.nsub, k).reshape(-1)
    idx, gain = _assign(lat, xv.reshape(-1, lat.dim), wv.reshape(-1, lat.dim), s)
    err = (wv * xv * xv).sum((-1, -2)) - gain.reshape(S, lat.nsub, k).sum(-1)
    return idx.reshape(S, lat.nsub, k), err


def _refit_scale(lat: Lattice, xv, wv, idx):
    """Least-squares sub-block scale for fixed grid points, and the error it reaches."""
    g = grid(lat.name, str(xv.device))[idx]  # [S, nsub, k, dim]
    sxg = (wv * xv * g).sum((-1, -2))
    sgg = (wv * g * g).sum((-1, -2))
    s = _safe_div(sxg, sgg).clamp(min=0)
    err = (wv * xv * xv).sum((-1, -2)) - 2 * s * sxg + s * s * sgg
    return s, err


def _choose_codes(lat: Lattice, xv, wv, d, l0, spread: int):
    """Best code in l0-spread..l0+spread per sub-block for super-block scale d [S]; codes, indices, errors."""
    best_l = best_idx = best_err = None
    for delta in range(-spread, spread + 1):
        lc = (l0 + delta).clamp(0, 15)
        idx, err = _fit_subs(lat, xv, wv, d[:, None] * (0.5 + lc) * lat.mul)
        if best_err is None:
            best_l, best_idx, best_err = lc, idx, err
            continue
        b = err < best_err
        best_l = torch.where(b, lc, best_l)
        best_idx = torch.where(b[..., None], idx, best_idx)
        best_err = torch.where(b, err, best_err)
    return best_l, best_idx, best_err


def _codes_for(lat: Lattice, s, d):
    return torch.round(_safe_div(s, d[:, None] * lat.mul) - 0.5).clamp(0, 15)


_SCALE_TRIES = (0.7, 0.85, 1.0, 1.15, 1.3)
_D_TRIES = (1.0,)


def search(lat: Lattice, x: torch.Tensor, w: torch.Tensor, fixed: SymmetricScales | None = None):
    """f16 d [S], sub-block codes [S, nsub], grid indices [S, groups] and sign bits [S, 256] for x [S, 256]."""
    S = x.shape[0]
    neg, xval = _signs(lat, x, w)
    k = lat.sub // lat.dim
    xv = xval.reshape(S, lat.nsub, k, lat.dim)
    wv = w.reshape(S, lat.nsub, k, lat.dim)
    gmax = float(grid(lat.name).max())
    if fixed is not None:
        d = f16(fixed.d.reshape(-1).to(x))
        if fixed.sub is None:
            amax = xval.reshape(S, lat.nsub, -1).amax(-1)
            l0 = _codes_for(lat, amax / gmax, d)
            codes, idx, _ = _choose_codes(lat, xv, wv, d, l0, 2)
        else:
            codes = fixed.sub.reshape(S, lat.nsub).to(x).round().clamp(0, 15)
            idx, _ = _fit_subs(lat, xv, wv, d[:, None] * (0.5 + codes) * lat.mul)
        return d, codes, idx.reshape(S, -1), neg

    # 1) a free scale per sub-block: candidates around max/gmax, each refit by least squares
    amax = xval.reshape(S, lat.nsub, -1).amax(-1)
    best_s = torch.zeros_like(amax)
    best_err = torch.full_like(amax, float("inf"))
    for r in _SCALE_TRIES:
        idx, _ = _fit_subs(lat, xv, wv, amax / (gmax * r))
        s, err = _refit_scale(lat, xv, wv, idx)
        b = err < best_err
        best_s, best_err = torch.where(b, s, best_s), torch.where(b, err, best_err)
    # 2) the super-block d maps the largest sub-block scale to code 15; try a few d, codes +-1 each
    d0 = best_s.amax(-1) / (15.5 * lat.mul)
    res = None
    for m in _D_TRIES:
        d = f16(d0 * m)
        codes, idx, err = _choose_codes(lat, xv, wv, d, _codes_for(lat, best_s, d), 1)
        tot = err.sum(-1)
        if res is None:
            res = [d, codes, idx, tot]
            continue
        b = tot < res[3]
        res = [
            torch.where(b.reshape((-1,) + (1,) * (t.dim() - 1)), n, t)
            for n, t in zip((d, codes, idx, tot), res, strict=True)
        ]
    d, codes, idx, _ = res
    return d, codes, idx.reshape(S, -1), neg


# ----------------------------------------------------------------- packing
def _u8(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.uint8)


def _f16_bytes(d: torch.Tensor) -> torch.Tensor:
    return d.to(torch.float16).contiguous().view(torch.uint8).reshape(-1, 2)


def _le_bytes(v: torch.Tensor, n: int) -> torch.Tensor:
    """Integer tensor [..., m] -> little-endian bytes [..., m*n]."""
    v = v.to(torch.int64)
    out = torch.stack([(v >> (8 * i)) & 255 for i in range(n)], dim=-1)
    return _u8(out).reshape(*v.shape[:-1], -1)


def _sign_bytes(neg: torch.Tensor) -> torch.Tensor:
    """[S, 256] bools -> [S, 32] bytes, bit i of byte j = value 8j+i."""
    b = neg.reshape(neg.shape[0], -1, 8).to(torch.int64)
    return _u8((b << torch.arange(8, device=neg.device)).sum(-1))


def _nibbles(codes: torch.Tensor) -> torch.Tensor:
    c = _u8(codes)
    return c[:, 0::2] | (c[:, 1::2] << 4)


def _pack(lat: Lattice, d, codes, idx, neg) -> torch.Tensor:
    S = d.shape[0]
    codes = codes.to(torch.int64)
    sb = _sign_bytes(neg).to(torch.int64)  # [S, 32]
    if lat.name in ("IQ2_XXS", "IQ3_XXS"):
        # per sub-block of 32: four 7-bit sign indices and the 4-bit code in one uint32
        s7 = (sb & 127).reshape(S, 8, 4)
        meta = s7[..., 0] | (s7[..., 1] << 7) | (s7[..., 2] << 14) | (s7[..., 3] << 21) | (codes << 28)
        if lat.name == "IQ2_XXS":
            q = _u8(idx).reshape(S, 8, 4)
            body = torch.cat([q, _le_bytes(meta[..., None], 4)], dim=-1).reshape(S, -1)
            return torch.cat([_f16_bytes(d), body], dim=1)
        return torch.cat([_f16_bytes(d), _u8(idx), _le_bytes(meta, 4)], dim=1)
    if lat.name == "IQ2_XS":
        q = idx | ((sb & 127) << 9)
        return torch.cat([_f16_bytes(d), _le_bytes(q[..., None], 2).reshape(S, -1), _nibbles(codes)], dim=1)
    if lat.name == "IQ2_S":
        hi = (idx >> 8).reshape(S, 8, 4)
        qh = hi[..., 0] | (hi[..., 1] << 2) | (hi[..., 2] << 4) | (hi[..., 3] << 6)
        return torch.cat([_f16_bytes(d), _u8(idx & 255), _u8(sb), _u8(qh), _nibbles(codes)], dim=1)
    # IQ3_S
    hi = (idx >> 8).reshape(S, 8, 8)
    qh = (hi << torch.arange(8, device=idx.device)).sum(-1)
    return torch.cat([_f16_bytes(d), _u8(idx & 255), _u8(qh), _u8(sb), _nibbles(codes)], dim=1)


def _encoder(name: str):
    lat = LATTICES[name]

    def enc(x: torch.Tensor, w: torch.Tensor, scales) -> torch.Tensor:
        if scales is not None and scales.sub is not None and scales.sub.numel() != x.shape[0] * lat.nsub:
            raise QuantError(
                f"{name} takes {lat.nsub} sub-block codes per super-block, got {tuple(scales.sub.shape)}"
            )
        d, codes, idx, neg = search(lat, x, w, scales)
        return _pack(lat, d, codes, idx, neg)

    return enc


# ----------------------------------------------------------------- decoding
def _f16(b: torch.Tensor) -> torch.Tensor:
    return b.contiguous().view(torch.float16).reshape(-1).to(torch.float32)


def _bits(b: torch.Tensor, n: int) -> torch.Tensor:
    """[..., m] bytes/ints -> [..., m*n] bits, low bit first."""
    return ((b.to(torch.int64)[..., None] >> torch.arange(n, device=b.device)) & 1).reshape(*b.shape[:-1], -1)


def _from_le(b: torch.Tensor, n: int) -> torch.Tensor:
    """[..., m*n] bytes -> [..., m] little-endian ints."""
    v = b.to(torch.int64).reshape(*b.shape[:-1], -1, n)
    return (v << (8 * torch.arange(n, device=b.device))).sum(-1)


def _parity_signs(s7: torch.Tensor) -> torch.Tensor:
    """7-bit sign indices [..., m] -> 8 sign bits each [..., m*8] (8th = parity of the 7)."""
    bits = _bits(s7, 7).reshape(*s7.shape, 7)
    return torch.cat([bits, bits.sum(-1, keepdim=True) % 2], dim=-1).reshape(*s7.shape[:-1], -1)


def _unpack(lat: Lattice, b: torch.Tensor):
    """Block bytes -> d [N], codes [N, nsub], grid indices [N, groups], sign bits [N, 256]."""
    N = b.shape[0]
    d = _f16(b[:, 0:2])
    if lat.name in ("IQ2_XXS", "IQ3_XXS"):
        if lat.name == "IQ2_XXS":
            body = b[:, 2:66].reshape(N, 8, 8)
            idx, meta = body[..., :4].reshape(N, -1).to(torch.int64), _from_le(body[..., 4:], 4)[..., 0]
        else:
            idx, meta = b[:, 2:66].to(torch.int64), _from_le(b[:, 66:98], 4)
        s7 = torch.stack([(meta >> (7 * k)) & 127 for k in range(4)], dim=-1).reshape(N, 32)
        return d, meta >> 28, idx, _parity_signs(s7)
    codes = lambda s: torch.stack([s & 15, s >> 4], dim=-1).reshape(N, -1).to(torch.int64)  # noqa: E731
    if lat.name == "IQ2_XS":
        q = _from_le(b[:, 2:66], 2)
        return d, codes(b[:, 66:74]), q & 511, _parity_signs(q >> 9)
    if lat.name == "IQ2_S":
        qh = b[:, 66:74].to(torch.int64)
        hi = torch.stack([(qh >> (2 * k)) & 3 for k in range(4)], dim=-1).reshape(N, 32)
        return d, codes(b[:, 74:82]), b[:, 2:34].to(torch.int64) | (hi << 8), _bits(b[:, 34:66], 8)
    hi = _bits(b[:, 66:74], 8)
    return d, codes(b[:, 106:110]), b[:, 2:66].to(torch.int64) | (hi << 8), _bits(b[:, 74:106], 8)


def _decoder(name: str):
    lat = LATTICES[name]

    def dec(b: torch.Tensor) -> torch.Tensor:
        d, codes, idx, sbits = _unpack(lat, b)
        g = grid(name, str(b.device))[idx].reshape(b.shape[0], lat.nsub, -1)
        D = d[:, None] * ((0.5 + codes.to(torch.float32)) * lat.mul)
        sign = 1.0 - 2.0 * sbits.to(torch.float32).reshape(b.shape[0], lat.nsub, -1)
        return (D[..., None] * g * sign).reshape(b.shape[0], QK)

    return dec


LATTICE_ENCODERS: dict = {n: _encoder(n) for n in LATTICES}
LATTICE_DECODERS: dict = {n: _decoder(n) for n in LATTICES}


@functools.cache
def grid_encoders() -> dict:
    """Encoders of every grid type: these lattices and the ternary IQ1 types (omnimodel.quant.iq1)."""
    from omnimodel.quant import iq1

    return LATTICE_ENCODERS | iq1.IQ1_ENCODERS


@functools.cache
def grid_decoders() -> dict:
    """Decoders of every grid type, as grid_encoders()."""
    from omnimodel.quant import iq1

    return LATTICE_DECODERS | iq1.IQ1_DECODERS
