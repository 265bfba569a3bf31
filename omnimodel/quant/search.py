"""Vectorised scale searches that minimise the importance-weighted squared error of each block.

Every function works on a whole batch of blocks at once ([B, n] tensors); nothing loops over
blocks. `Levels` maps a scaled value to the nearest representable level (uniform integers or a
non-uniform codebook such as IQ4_NL's).
"""

from __future__ import annotations

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
        cb = self.codebook.to(t.device)
        mid = (cb[1:] + cb[:-1]) * 0.5
        idx = torch.bucketize(t.contiguous(), mid)
        return idx.to(torch.uint8), cb[idx]

    def nearest_value(self, t: torch.Tensor) -> torch.Tensor:
        """Level value nearest to each element of `t` (may reuse `t`'s storage)."""
        if self.codebook is None:
            return t.round_().clamp_(self.lo, self.hi)
        cb = self.codebook.to(t.device)
        return cb[torch.bucketize(t.contiguous(), (cb[1:] + cb[:-1]) * 0.5)]

    @property
    def extreme(self) -> float:
        """The level of largest magnitude (the negative end: GGML maps the block's max there)."""
        if self.codebook is None:
            return float(self.lo)
        return float(self.codebook[0])


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    nz = b != 0
    return torch.where(nz, a / torch.where(nz, b, 1.0), 0.0)


def _recip(b: torch.Tensor) -> torch.Tensor:
    """1/b where b != 0, else 0."""
    nz = b != 0
    return torch.where(nz, torch.where(nz, b, 1.0).reciprocal(), 0.0)


def wdot(w: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of w*a*b (plain a*b when w is None: no importance multiply)."""
    return torch.linalg.vecdot(a, b if w is None else w * b)


def wsum(w: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of w*a (plain a when w is None)."""
    return a.sum(-1) if w is None else torch.linalg.vecdot(w, a)


def symmetric_block_scale(x: torch.Tensor, w: torch.Tensor | None, levels: Levels, ntry: int, step: float) -> torch.Tensor:
    """Per-row scale s minimising sum w (x - s*q)^2 with q = nearest level of x/s.

    Tries the scales that send the row's largest-magnitude element near the extreme level
    (extreme + k*step, k in -ntry..ntry), refits s by least squares for each, keeps the best,
    then polishes with two rounds of requantise-and-refit.
    """
    amax, imax = x.abs().max(dim=-1)
    vmax = x.gather(-1, imax[:, None]).squeeze(-1)
    best_score = torch.full_like(amax, -1.0)
    best_scale = torch.zeros_like(amax)
    ext = levels.extreme
    sign = -1.0 if ext < 0 else 1.0
    for k in range(-ntry, ntry + 1):
        target = ext + sign * step * k
        iscale = _recip(vmax) * target
        q = levels.nearest_value(x * iscale[:, None])
        sqx = wdot(w, q, x)
        sqq = wdot(w, q, q)
        score = _safe_div(sqx * sqx, sqq)
        better = score > best_score
        best_score = torch.where(better, score, best_score)
        best_scale = torch.where(better, _safe_div(sqx, sqq), best_scale)
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
    best_err = torch.full_like(rng, float("inf"))
    best_s = torch.zeros_like(rng)
    best_m = -xmin
    for k in range(-1, nstep + 1):
        base = nmax if k < 0 else nmax + rmin + rdelta * k
        iscale = base * inv_r
        q = torch.mul(x0, iscale[:, None]).round_().clamp_(0, nmax)
        wq = q if w is None else w * q
        sl = wq.sum(-1)
        sl2 = torch.linalg.vecdot(wq, q)
        sxl = torch.linalg.vecdot(wq, x)
        det = sw * sl2 - sl * sl
        s = _safe_div(sw * sxl - sx * sl, det)
        mn = _safe_div(sl2 * sx - sl * sxl, det)  # the offset ("min", <= 0)
        pos = mn > 0
        s = torch.where(pos, _safe_div(sxl, sl2), s)
        mn = torch.where(pos, torch.zeros_like(mn), mn)
        # error of x ~ s*q + mn, from the sufficient statistics
        err = sxx + s * s * sl2 + mn * mn * sw - 2 * s * sxl - 2 * mn * sx + 2 * s * mn * sl
        better = (err < best_err) & (det > 0)
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        best_m = torch.where(better, -mn, best_m)
    flat = rng <= 0
    return torch.where(flat, torch.zeros_like(best_s), best_s), torch.where(flat, -xmin, best_m)


def weighted_err(x: torch.Tensor, w: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of w * (x - y)^2 (plain squared error when w is None)."""
    d = x - y
    return wdot(w, d, d)
