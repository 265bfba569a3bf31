"""Block encoders: float matrices to the exact GGML byte layout, vectorised with torch (CPU or CUDA).

`encode(w, type, importance=None, scales=None)` returns a uint8 tensor [rows, row_bytes]. With
`importance` (per element, same shape) each block minimises sum importance*(w - dequant)^2; without
it, the plain squared error. `scales` (see omnimodel.quant.scales) fixes the block scales and only
the quantized values are chosen.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import gguf
import torch

from omnimodel.errors import QuantError
from omnimodel.quant.formats import QK_K, check_input, get_format
from omnimodel.quant.scales import AffineScales, SymmetricScales
from omnimodel.quant.search import (
    Levels,
    _recip,
    _safe_div,
    affine_block_scale,
    f16,
    rowsum,
    symmetric_block_scale,
    wdot,
    weighted_err,
    wsum,
)

IQ4_VALUES = tuple(int(v) for v in gguf.quants.IQ4_NL.kvalues)
# elements per chunk: on CPU small enough that every temporary stays in cache (and is reused by
# the allocator instead of freshly mapped); CUDA takes large chunks (fewer launches)
# search effort (candidate scales, refit rounds): plain error takes the fast setting, which costs
# well under 1% RMSE; with importance (imatrix, ActQuant weights) the thorough one
_REFITS = {False: 1, True: 3}  # rounds of (sub-block codes, super-block scale) refit, by importance


def _effort(w, fast, thorough):
    return fast if w is None else thorough
_DELTA3 = torch.tensor([0.0, -1.0, 1.0])  # code polish: current, -1, +1
_DELTA5 = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # (scale, min) codes
_CHUNK_ELEMS = {"cpu": 1 << 17, "cuda": 1 << 25}
_CPU_CHUNK_IQ4 = 1 << 16  # IQ4 searches hold 17 candidate codebook look-ups at once
_LATTICE_CHUNK_ELEMS = {"cpu": 1 << 22, "cuda": 1 << 25}  # lattice searches bound their own temporaries


def _u8(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.uint8)


def _f16_bytes(d: torch.Tensor) -> torch.Tensor:
    """[S] float -> [S, 2] little-endian f16 bytes."""
    return d.to(torch.float16).contiguous().view(torch.uint8).reshape(-1, 2)


def _pick(better: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (new.dim() - 1)
    return torch.where(better.reshape(shape), new, old)


# ----------------------------------------------------------------- one scale per block
def _single_scale(x, w, levels: Levels, fixed_d, ntry: int, step: float):
    """Block f16 scale d and level indices for x ~ d * level."""
    if fixed_d is not None:
        d = f16(fixed_d.reshape(-1).to(x))
        idx, _ = levels.nearest(x * _safe_div(torch.ones_like(d), d)[:, None])
        return d, idx
    s = symmetric_block_scale(x, w, levels, ntry, step)
    d = f16(s)
    idx, q = levels.nearest(x * _safe_div(torch.ones_like(d), d)[:, None])
    err = weighted_err(x, w, d[:, None] * q)
    for _ in range(2):
        d2 = f16(_safe_div(wdot(w, q, x), wdot(w, q, q)))
        idx2, q2 = levels.nearest(x * _safe_div(torch.ones_like(d2), d2)[:, None])
        err2 = weighted_err(x, w, d2[:, None] * q2)
        better = err2 < err
        d, idx, q, err = _pick(better, d2, d), _pick(better, idx2, idx), _pick(better, q2, q), _pick(better, err2, err)
    return d, idx


def _enc_q8_0(x, w, scales):
    if w is None and scales is None:
        # plain error: the absmax scale (what GGML does); the search gains nothing measurable here
        d = f16(x.abs().amax(-1) * (1.0 / 127.0))
        q = torch.mul(x, _recip(d)[:, None]).round_().clamp_(-127, 127).to(torch.int8).view(torch.uint8)
        return torch.cat([_f16_bytes(d), q], dim=1)
    d, idx = _single_scale(x, w, Levels(-128, 127), None if scales is None else scales.d, 4, 0.5)
    q = (idx.to(torch.int16) - 128).to(torch.int8).view(torch.uint8)
    return torch.cat([_f16_bytes(d), q], dim=1)


def _enc_iq4_nl(x, w, scales):
    lv = Levels(0, 15, torch.tensor(IQ4_VALUES, dtype=torch.float32))
    d, idx = _single_scale(x, w, lv, None if scales is None else scales.d, *_effort(w, (8, 2.0), (15, 1.0)))
    return torch.cat([_f16_bytes(d), _pack_nibbles32(idx.reshape(-1, 32))], dim=1)


def _pack_nibbles32(idx: torch.Tensor) -> torch.Tensor:
    """[N, 32] 4-bit codes -> [N, 16] bytes: element j low nibble, j+16 high nibble."""
    return idx[:, :16] | (idx[:, 16:] << 4)


# ----------------------------------------------------------------- two-level symmetric
def _two_level_sym(x, w, nsub, levels: Levels, cmin, cmax, fixed: SymmetricScales | None, ntry, step):
    """Super-block f16 d, integer sub-block codes [S, nsub] and level indices [S, 256]."""
    S = x.shape[0]
    xs, ws = x.reshape(S, nsub, -1), None if w is None else w.reshape(S, nsub, -1)

    def scaled(d, codes):
        e = d[:, None] * codes
        return e, xs * _safe_div(torch.ones_like(e), e)[..., None]

    def quantize_sub(d, codes):
        # level values (indices are taken once at the end) and the error per sub-block
        e, t = scaled(d, codes)
        q = levels.nearest_value(t)
        if levels.codebook is not None:  # a codebook may have no zero level
            q = torch.where(e[..., None] != 0, q, 0.0)
        r = torch.addcmul(xs, q, e[..., None], value=-1.0).square_()
        return q, rowsum(r if ws is None else r.mul_(ws))

    def indices(d, codes):
        return levels.nearest(scaled(d, codes)[1])[0]

    def quantize_with(d, codes):
        # choose each sub-block's code among code, code-1, code+1 for this d (all three in one pass)
        c3 = (codes[None] + _DELTA3.to(codes)[:, None, None]).clamp_(cmin, cmax)
        q, err = quantize_sub(d, c3)
        err, k = err.min(0)  # first minimum: the current code wins ties
        kk = k[None, ..., None].expand(1, *q.shape[1:])
        return c3.gather(0, k[None]).squeeze(0), q.gather(0, kk).squeeze(0), err.sum(-1)

    if fixed is not None:
        d = f16(fixed.d.reshape(-1).to(x))
        codes = fixed.sub.reshape(S, nsub).to(x).round().clamp(cmin, cmax)
        return d, codes, indices(d, codes)
    sub = symmetric_block_scale(xs.reshape(S * nsub, -1), None if ws is None else ws.reshape(S * nsub, -1), levels, ntry, step)
    sub = sub.reshape(S, nsub)
    amax, imax = sub.abs().max(-1)
    smax = sub.gather(-1, imax[:, None]).squeeze(-1)
    d = f16(smax / cmin)
    codes = torch.round(sub * _safe_div(torch.ones_like(d), d)[:, None]).clamp(cmin, cmax)
    if w is None:
        # plain error: the neighbour polish runs once, after the refit
        q, err = quantize_sub(d, codes)
        err = err.sum(-1)
    else:
        codes, q, err = quantize_with(d, codes)
    for _ in range(_REFITS[w is not None]):
        # refit each sub-block's code against the current levels, then the super-block d
        sqx, sqq = wdot(ws, q, xs), wdot(ws, q, q)
        codes2 = torch.where(sqq > 0, torch.round(_safe_div(sqx, sqq) * _safe_div(torch.ones_like(d), d)[:, None]), codes)
        codes2 = codes2.clamp(cmin, cmax)
        # least-squares d for y = codes2 * q, from the sub-block sums
        d2 = f16(_safe_div((codes2 * sqx).sum(-1), (codes2 * codes2 * sqq).sum(-1)))
        codes2, q2, err2 = quantize_with(d2, codes2)
        better = err2 < err
        d, codes, q, err = (_pick(better, a, b) for a, b in ((d2, d), (codes2, codes), (q2, q), (err2, err)))
    return d, codes, indices(d, codes)


def _enc_q6_k(x, w, scales):
    d, codes, idx = _two_level_sym(x, w, 16, Levels(-32, 31), -128, 127, scales, *_effort(w, (4, 0.2), (9, 0.1)))
    L = idx.reshape(-1, 2, 4, 32)
    ql = (L[:, :, 0:2] & 15) | ((L[:, :, 2:4] & 15) << 4)  # [S, 2, 2, 32]
    qh = (L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4) | ((L[:, :, 3] >> 4) << 6)
    sc = codes.to(torch.int8).view(torch.uint8)
    return torch.cat([ql.reshape(-1, 128), qh.reshape(-1, 64), sc, _f16_bytes(d)], dim=1)


def _enc_q3_k(x, w, scales):
    d, codes, idx = _two_level_sym(x, w, 16, Levels(-4, 3), -32, 31, scales, *_effort(w, (4, 0.2), (9, 0.1)))
    L = idx.reshape(-1, 8, 32)
    hmask = torch.zeros_like(L[:, 0])
    for b in range(8):
        hmask |= (L[:, b] >> 2) << b
    L2 = (L & 3).reshape(-1, 2, 4, 32)
    qs = L2[:, :, 0] | (L2[:, :, 1] << 2) | (L2[:, :, 2] << 4) | (L2[:, :, 3] << 6)
    lc = _u8(codes + 32)
    low = (lc[:, 0:8] & 15) | ((lc[:, 8:16] & 15) << 4)
    hi = lc >> 4
    high = hi[:, 0:4] | (hi[:, 4:8] << 2) | (hi[:, 8:12] << 4) | (hi[:, 12:16] << 6)
    return torch.cat([hmask, qs.reshape(-1, 64), low, high, _f16_bytes(d)], dim=1)


def _enc_iq4_xs(x, w, scales):
    lv = Levels(0, 15, torch.tensor(IQ4_VALUES, dtype=torch.float32))
    d, codes, idx = _two_level_sym(x, w, 8, lv, -32, 31, scales, *_effort(w, (8, 2.0), (15, 1.0)))
    lc = _u8(codes + 32)
    sl = (lc[:, 0::2] & 15) | ((lc[:, 1::2] & 15) << 4)  # [S, 4]
    h = (lc >> 4).to(torch.int32)
    sh = torch.zeros_like(h[:, 0])
    for ib in range(8):
        sh |= h[:, ib] << (2 * ib)
    sh_bytes = torch.stack([sh & 255, sh >> 8], dim=1).to(torch.uint8)
    qs = _pack_nibbles32(idx.reshape(-1, 32)).reshape(-1, 128)
    return torch.cat([_f16_bytes(d), sh_bytes, sl, qs], dim=1)


# ----------------------------------------------------------------- two-level affine
def _two_level_affine(x, w, nsub, nmax, cmax, fixed: AffineScales | None, rmin, rdelta, nstep):
    """f16 d, dmin; sub-block codes sc, m [S, nsub]; codes L [S, 256] for x ~ d*sc*L - dmin*m."""
    S = x.shape[0]
    xs, ws = x.reshape(S, nsub, -1), None if w is None else w.reshape(S, nsub, -1)

    def quantize_sub(d, dm, sc, m):
        e, o = d[:, None] * sc, dm[:, None] * m
        inv = torch.where(e > 0, _recip(e), 0.0)  # codes 0 where the sub-block scale is not positive
        xo = xs + o[..., None]
        L = torch.mul(xo, inv[..., None]).round_().clamp_(0, nmax)
        r = torch.addcmul(xo, L, e[..., None], value=-1.0).square_()  # (x - (e*L - o))^2
        return L, rowsum(r if ws is None else r.mul_(ws))

    def quantize_with(d, dm, sc, m):
        # choose each sub-block's (scale, min) codes among themselves and their +-1 neighbours for
        # this d, dmin (all five in one pass)
        dd = _DELTA5.to(sc)
        sc5 = (sc[None] + dd[:, 0, None, None]).clamp_(0, cmax)
        m5 = (m[None] + dd[:, 1, None, None]).clamp_(0, cmax)
        L, err = quantize_sub(d, dm, sc5, m5)
        err, k = err.min(0)  # first minimum: the current codes win ties
        kk = k[None, ..., None].expand(1, *L.shape[1:])
        return sc5.gather(0, k[None]).squeeze(0), m5.gather(0, k[None]).squeeze(0), L.gather(0, kk).squeeze(0), err.sum(-1)

    if fixed is not None:
        d, dm = f16(fixed.d.reshape(-1).to(x)), f16(fixed.dmin.reshape(-1).to(x))
        sc = fixed.sc.reshape(S, nsub).to(x).round().clamp(0, cmax)
        m = fixed.m.reshape(S, nsub).to(x).round().clamp(0, cmax)
        L, _ = quantize_sub(d, dm, sc, m)
        return d, dm, sc, m, L
    s, mn = affine_block_scale(x.reshape(S * nsub, -1), None if w is None else w.reshape(S * nsub, -1), nmax, rmin, rdelta, nstep)
    s, mn = s.reshape(S, nsub), mn.reshape(S, nsub)
    d, dm = f16(s.max(-1).values / cmax), f16(mn.max(-1).values / cmax)
    sc = torch.round(s * _safe_div(torch.ones_like(d), d)[:, None]).clamp(0, cmax)
    m = torch.round(mn * _safe_div(torch.ones_like(dm), dm)[:, None]).clamp(0, cmax)
    if w is None:
        # plain error: the neighbour polish runs once, after the refit
        L, err = quantize_sub(d, dm, sc, m)
        err = err.sum(-1)
    else:
        sc, m, L, err = quantize_with(d, dm, sc, m)
    for _ in range(_REFITS[w is not None]):
        # refit per sub-block (scale, min) for the current codes, re-round them, then refit d, dmin
        sw = torch.full_like(d[:, None].expand(S, nsub), xs.shape[-1]) if ws is None else ws.sum(-1)
        sl, sl2, sx, sxl = wsum(ws, L), wdot(ws, L, L), wsum(ws, xs), wdot(ws, L, xs)
        det = sw * sl2 - sl * sl
        s2 = _safe_div(sw * sxl - sx * sl, det)
        mn2 = -_safe_div(sl2 * sx - sl * sxl, det)
        sc2 = torch.where(det > 0, torch.round(s2 * _safe_div(torch.ones_like(d), d)[:, None]), sc).clamp(0, cmax)
        m2 = torch.where(det > 0, torch.round(mn2 * _safe_div(torch.ones_like(dm), dm)[:, None]), m).clamp(0, cmax)
        # normal equations of x ~ d*(sc*L) - dmin*m over the super-block, from the sub-block sums
        saa, sbb, sab = (sc2 * sc2 * sl2).sum(-1), (m2 * m2 * sw).sum(-1), (sc2 * m2 * sl).sum(-1)
        sxa, sxb = (sc2 * sxl).sum(-1), (m2 * sx).sum(-1)
        det2 = saa * sbb - sab * sab
        d2 = torch.where(det2 > 0, _safe_div(sxa * sbb - sxb * sab, det2), d)
        dm2 = torch.where(det2 > 0, _safe_div(sxa * sab - sxb * saa, det2), dm)
        d2, dm2 = f16(d2.clamp(min=0)), f16(dm2.clamp(min=0))
        sc2, m2, L2, err2 = quantize_with(d2, dm2, sc2, m2)
        better = err2 < err
        d, dm, sc, m, L, err = (
            _pick(better, a, b) for a, b in ((d2, d), (dm2, dm), (sc2, sc), (m2, m), (L2, L), (err2, err))
        )
    return d, dm, sc, m, L


def _pack_k4_scales(sc: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Eight 6-bit scales and mins -> the 12-byte layout Q4_K/Q5_K read."""
    sc, m = _u8(sc), _u8(m)
    b0 = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    b4 = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    b8 = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return torch.cat([b0, b4, b8], dim=1)


def _enc_q4_k(x, w, scales):
    d, dm, sc, m, L = _two_level_affine(x, w, 8, 15, 63, scales, -1.0, *_effort(w, (0.2, 10), (0.1, 20)))
    L = _u8(L).reshape(-1, 4, 2, 32)
    qs = L[:, :, 0] | (L[:, :, 1] << 4)
    return torch.cat([_f16_bytes(d), _f16_bytes(dm), _pack_k4_scales(sc, m), qs.reshape(-1, 128)], dim=1)


def _enc_q5_k(x, w, scales):
    d, dm, sc, m, L = _two_level_affine(x, w, 8, 31, 63, scales, -0.5, *_effort(w, (0.2, 8), (0.1, 15)))
    L = _u8(L).reshape(-1, 4, 2, 32)
    qs = (L[:, :, 0] & 15) | ((L[:, :, 1] & 15) << 4)
    hb = L >> 4
    qh = torch.zeros_like(L[:, 0, 0])
    for n in range(4):
        qh |= (hb[:, n, 0] << (2 * n)) | (hb[:, n, 1] << (2 * n + 1))
    return torch.cat(
        [_f16_bytes(d), _f16_bytes(dm), _pack_k4_scales(sc, m), qh, qs.reshape(-1, 128)], dim=1
    )


def _enc_q2_k(x, w, scales):
    d, dm, sc, m, L = _two_level_affine(x, w, 16, 3, 15, scales, -0.5, *_effort(w, (0.2, 8), (0.1, 15)))
    L = _u8(L).reshape(-1, 2, 4, 32)
    qs = L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)
    scb = _u8(sc) | (_u8(m) << 4)
    return torch.cat([scb, qs.reshape(-1, 64), _f16_bytes(d), _f16_bytes(dm)], dim=1)


_BLOCK_ENCODERS = {
    "Q8_0": _enc_q8_0,
    "IQ4_NL": _enc_iq4_nl,
    "Q6_K": _enc_q6_k,
    "Q5_K": _enc_q5_k,
    "Q4_K": _enc_q4_k,
    "Q3_K": _enc_q3_k,
    "Q2_K": _enc_q2_k,
    "IQ4_XS": _enc_iq4_xs,
}


def supported_types() -> list[str]:
    """Type names `encode` can write."""
    from omnimodel.quant import lattice

    return ["F32", "F16", "BF16", *_BLOCK_ENCODERS, *lattice.grid_encoders()]


def _slice_scales(scales, r0: int, r1: int):
    if scales is None:
        return None
    if isinstance(scales, AffineScales):
        return AffineScales(scales.d[r0:r1], scales.dmin[r0:r1], scales.sc[r0:r1], scales.m[r0:r1])
    return SymmetricScales(scales.d[r0:r1], None if scales.sub is None else scales.sub[r0:r1])


def encode(
    w: torch.Tensor,
    qtype: str,
    importance: torch.Tensor | None = None,
    scales: SymmetricScales | AffineScales | None = None,
    name: str = "tensor",
) -> torch.Tensor:
    """Encode a [rows, cols] matrix as GGML type `qtype`; returns uint8 [rows, row_bytes]."""
    fmt = get_format(qtype)
    check_input(w, fmt, importance, name)
    rows, cols = w.shape
    if fmt.name == "F32":
        return w.to(torch.float32).contiguous().view(torch.uint8).reshape(rows, -1)
    if fmt.name in ("F16", "BF16"):
        dt = torch.float16 if fmt.name == "F16" else torch.bfloat16
        return w.to(dt).contiguous().view(torch.uint8).reshape(rows, -1)
    if fmt.name in _BLOCK_ENCODERS:
        enc = _BLOCK_ENCODERS[fmt.name]
        fixed_ok = {"Q4_K": AffineScales, "Q5_K": AffineScales, "Q2_K": AffineScales}.get(fmt.name, SymmetricScales)
    else:
        from omnimodel.quant import lattice

        grid_types = lattice.grid_encoders()
        if fmt.name not in grid_types:
            raise QuantError(f"tensor {name!r}: no encoder for {fmt.name} yet")
        enc, fixed_ok = grid_types[fmt.name], SymmetricScales
    if scales is not None and not isinstance(scales, fixed_ok):
        raise QuantError(f"tensor {name!r}: {fmt.name} takes {fixed_ok.__name__}, got {type(scales).__name__}")
    bs = fmt.block_size
    out = torch.empty(rows, fmt.row_bytes(cols), dtype=torch.uint8, device=w.device)
    lattice_type = fmt.name not in _BLOCK_ENCODERS
    cpu = w.device.type == "cpu"
    # Q8_0 without importance or fixed scales is one absmax pass: memory-bound, so one thread
    # streams it (a thread pool or intra-op threads only add synchronisation)
    streaming = fmt.name == "Q8_0" and importance is None and scales is None
    chunk = (_LATTICE_CHUNK_ELEMS if lattice_type else _CHUNK_ELEMS).get(w.device.type, _CHUNK_ELEMS["cuda"])
    if cpu and fmt.name in ("IQ4_NL", "IQ4_XS"):
        chunk = _CPU_CHUNK_IQ4
    step = max(1, chunk // cols)

    def run(r0: int) -> None:
        r1 = min(rows, r0 + step)
        x = w[r0:r1].to(torch.float32).reshape(-1, bs)
        if importance is None:
            # block encoders skip the importance multiplies; the lattice search takes weights
            wt = torch.ones_like(x) if lattice_type else None
        else:
            wt = importance[r0:r1].to(device=x.device, dtype=torch.float32).reshape(-1, bs)
        blocks = enc(x, wt, _slice_scales(scales, r0, r1))
        out[r0:r1] = blocks.reshape(r1 - r0, -1)

    starts = range(0, rows, step)
    threads = torch.get_num_threads()
    if not cpu or lattice_type or threads == 1 or len(starts) == 1:
        for r0 in starts:
            run(r0)
        return out
    # CPU block encoders: many small ops on cache-sized chunks; intra-op threads would synchronise
    # on every op (and stall on a busy machine), so each thread encodes whole chunks single-threaded
    def run_single(r0: int) -> None:
        torch.set_num_threads(1)
        run(r0)

    torch.set_num_threads(1)
    try:
        if streaming:
            for r0 in starts:
                run(r0)
            return out
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run_single, starts))
    finally:
        torch.set_num_threads(threads)
    return out


assert QK_K == 256
