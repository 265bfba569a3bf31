"""Vectorised scale searches that minimise the importance-weighted squared error of each block.

Every function works on a whole batch of blocks at once ([B, n] tensors); nothing loops over
blocks. `Levels` maps a scaled value to the nearest representable level (uniform integers or a
non-uniform codebook such as IQ4_NL's).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


def f16(t: torch.Tensor) -> torch.Tensor:
    """Round to the nearest f16 value (what the block header stores), back in f32."""
    return t.to(torch.float16).to(torch.float32)


@dataclass
class Levels:
    """Representable levels: uniform integers lo..hi, or a sorted codebook of values."""

    lo: int
    hi: int
    codebook: torch.Tensor | None = None

    def nearest(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index (0-based code) and level value nearest to each element of `t`."""
        if self.codebook is None:
            v = torch.round(t).clamp_(self.lo, self.hi)
            return (v - self.lo).to(torch.uint8), v
        idx = self._lookup(t, values=False)
        return idx.to(torch.uint8), self.codebook.to(t.device).index_select(0, idx.reshape(-1)).view(idx.shape)

    def nearest_value(self, t: torch.Tensor) -> torch.Tensor:
        """Level value nearest to each element of `t` (may reuse `t`'s storage)."""
        if self.codebook is None:
            return t.round_().clamp_(self.lo, self.hi)
        return self._lookup(t, values=True)

    def _lookup(self, t: torch.Tensor, values: bool) -> torch.Tensor:
        """Nearest codebook index (or value) of each element; ties go to the lower level."""
        key = (tuple(self.codebook.tolist()), str(t.device))
        table = _half_step_table(*key)
        if table is None:
            cb = self.codebook.to(t.device)
            idx = torch.bucketize(t.contiguous(), (cb[1:] + cb[:-1]) * 0.5)
            return cb[idx] if values else idx
        idx_lut, val_lut, u0 = table
        # midpoints m are multiples of 1/2: #(m < t) == #(2m < ceil(2t)), one table look-up
        u = torch.mul(t, 2.0).ceil_().nan_to_num_(nan=float(u0)).clamp_(u0, u0 + idx_lut.numel() - 1).sub_(u0)
        u = u.to(torch.int32).reshape(-1)
        return (val_lut if values else idx_lut).index_select(0, u).view(t.shape)

    @property
    def extreme(self) -> float:
        """The level of largest magnitude (the negative end: GGML maps the block's max there)."""
        if self.codebook is None:
            return float(self.lo)
        return float(self.codebook[0])


@functools.lru_cache(maxsize=8)
def _half_step_table(codebook: tuple[float, ...], device: str) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """Tables u -> #(midpoints m with 2m < u) and its level, when every 2m is an integer; else None."""
    mids2 = [a + b for a, b in zip(codebook[:-1], codebook[1:], strict=False)]
    if any(m != int(m) for m in mids2):
        return None
    u0, u1 = int(mids2[0]), int(mids2[-1]) + 1
    idx = torch.tensor([sum(m < u for m in mids2) for u in range(u0, u1 + 1)], dtype=torch.long, device=device)
    return idx, torch.tensor(codebook, dtype=torch.float32, device=device)[idx], u0


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    nz = b != 0
    return torch.where(nz, a / torch.where(nz, b, 1.0), 0.0)


def _recip(b: torch.Tensor) -> torch.Tensor:
    """1/b where b != 0, else 0."""
    nz = b != 0
    return torch.where(nz, torch.where(nz, b, 1.0).reciprocal(), 0.0)


def rowsum(t: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis as a matrix-vector product (about 2x torch.sum over 16-32 wide rows)."""
    return t @ torch.ones(t.shape[-1], dtype=t.dtype, device=t.device)


def wdot(w: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of w*a*b (plain a*b when w is None: no importance multiply)."""
    return torch.linalg.vecdot(a, b if w is None else w * b)


def wsum(w: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of w*a (plain a when w is None)."""
    return rowsum(a) if w is None else torch.linalg.vecdot(w, a)


def symmetric_block_scale(x: torch.Tensor, w: torch.Tensor | None, levels: Levels, ntry: int, step: float) -> torch.Tensor:
    """Per-row scale s minimising sum w (x - s*q)^2 with q = nearest level of x/s.

    Tries the scales that send the row's largest-magnitude element near the extreme level
    (extreme + k*step, k in -ntry..ntry), refits s by least squares for each, keeps the best,
    then polishes with two rounds of requantise-and-refit.
    """
    amax, imax = x.abs().max(dim=-1)
    vmax = x.gather(-1, imax[:, None]).squeeze(-1)
    ext = levels.extreme
    sign = -1.0 if ext < 0 else 1.0
    # all candidates at once: [K, B, n] (one op per step instead of one per candidate)
    targets = torch.tensor([ext + sign * step * k for k in range(-ntry, ntry + 1)], dtype=x.dtype, device=x.device)
    iscale = targets[:, None] * _recip(vmax)[None, :]
    q = levels.nearest_value(x[None] * iscale[..., None])
    wx = x if w is None else w * x
    sqx = torch.einsum("kbn,bn->kb", q, wx)
    sqq = rowsum(q.square_() if w is None else q.square_().mul_(w))
    score = _safe_div(sqx * sqx, sqq)
    best_score, k = score.max(0)  # first maximum, as a sequential strict-improvement scan
    best_scale = _safe_div(sqx, sqq).gather(0, k[None]).squeeze(0)
    for _ in range(2):
        q = levels.nearest_value(x * _recip(best_scale)[:, None])
        sqx = wdot(w, q, x)
        sqq = wdot(w, q, q)
        score = _safe_div(sqx * sqx, sqq)
        better = score > best_score
        best_score = torch.where(better, score, best_score)
        best_scale = torch.where(better, _safe_div(sqx, sqq), best_scale)
    return torch.where(amax > 1e-15, best_scale, torch.zeros_like(best_scale))


def affine_block_scale(
    x: torch.Tensor, w: torch.Tensor | None, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (scale >= 0, mn >= 0) minimising sum w (x - (scale*q - mn))^2, q in 0..nmax.

    Candidate inverse scales (nmax + rmin + k*rdelta)/(max - min) give integer codes; for each the
    scale and offset are refit by weighted least squares (offset clipped at 0 as GGML does).
    """
    xmin = x.min(-1).values.clamp(max=0.0)
    xmax = x.max(-1).values
    rng = xmax - xmin
    sw = torch.full_like(rng, x.shape[-1]) if w is None else w.sum(-1)
    sx = wsum(w, x)
    sxx = wdot(w, x, x)
    inv_r = _recip(rng)
    x0 = x - xmin[:, None]
    # all candidates at once: [K, B, n]
    bases = [float(nmax)] + [nmax + rmin + rdelta * k for k in range(nstep + 1)]
    iscale = torch.tensor(bases, dtype=x.dtype, device=x.device)[:, None] * inv_r[None, :]
    q = torch.mul(x0[None], iscale[..., None]).round_().clamp_(0, nmax)
    # reductions without [K, B, n] temporaries: a batched matmul against x, then q*q in place
    wq = q if w is None else w * q
    sl = rowsum(wq)
    sxl = torch.einsum("kbn,bn->kb", wq, x)
    sl2 = rowsum(wq.mul_(q) if w is not None else q.square_())
    det = sw * sl2 - sl * sl
    s = _safe_div(sw * sxl - sx * sl, det)
    mn = _safe_div(sl2 * sx - sl * sxl, det)  # the offset ("min", <= 0)
    pos = mn > 0
    s = torch.where(pos, _safe_div(sxl, sl2), s)
    mn = torch.where(pos, 0.0, mn)
    # error of x ~ s*q + mn, from the sufficient statistics; first minimum over the candidates
    err = sxx + s * s * sl2 + mn * mn * sw - 2 * s * sxl - 2 * mn * sx + 2 * s * mn * sl
    err = torch.where(det > 0, err, float("inf"))
    best_err, k = err.min(0)
    found = torch.isfinite(best_err)
    best_s = torch.where(found, s.gather(0, k[None]).squeeze(0), 0.0)
    best_m = torch.where(found, -mn.gather(0, k[None]).squeeze(0), -xmin)
    flat = rng <= 0
    return torch.where(flat, torch.zeros_like(best_s), best_s), torch.where(flat, -xmin, best_m)


def weighted_err(x: torch.Tensor, w: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of w * (x - y)^2 (plain squared error when w is None)."""
    d = x - y
    return wdot(w, d, d)
