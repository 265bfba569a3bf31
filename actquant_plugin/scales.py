"""Stage 2 scale optimisation (Eq. 10/11): per-element weights and the alternating code assignment /
closed-form scale update per block, on the values the GGML type can actually store.

A block of a K/IQ4 type decodes as x = d * c_j * q (symmetric) or x = d * c_j * q - dmin * m_j
(affine), with f16 `d`/`dmin`, integer sub-block codes c_j, m_j and q from the type's levels. The
alternation starts from the shared encoder's unweighted choice and repeats: q = the level nearest
to the scaled value (omega drops out), then the weighted least-squares d (and dmin), then each
sub-block code (a 1-D convex quadratic in an integer, so rounding the real optimum is exact).
Every step is kept only where it does not increase sum omega (w - x_hat)^2, so the objective
never increases. The result goes to the encoder as fixed scales; the encoder's q for fixed
scales is the same nearest-level rule, so the bytes realise exactly the optimised blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import torch

from omnimodel.quant import AffineScales, SymmetricScales, encode
from omnimodel.quant.search import Levels

IQ4_VALUES = torch.tensor([float(v) for v in gguf.quants.IQ4_NL.kvalues])


@dataclass(frozen=True)
class Family:
    """How one GGML type decodes: block and sub-block sizes, level set, code ranges, affine or not."""

    block: int
    nsub: int
    levels: Levels
    cmin: int = 1
    cmax: int = 1
    affine: bool = False

    @property
    def has_codes(self) -> bool:
        return self.nsub > 1


FAMILIES: dict[str, Family] = {
    "Q8_0": Family(32, 1, Levels(-128, 127)),
    "IQ4_NL": Family(32, 1, Levels(0, 15, IQ4_VALUES)),
    "Q6_K": Family(256, 16, Levels(-32, 31), -128, 127),
    "Q3_K": Family(256, 16, Levels(-4, 3), -32, 31),
    "IQ4_XS": Family(256, 8, Levels(0, 15, IQ4_VALUES), -32, 31),
    "Q4_K": Family(256, 8, Levels(0, 15), 0, 63, True),
    "Q5_K": Family(256, 8, Levels(0, 31), 0, 63, True),
    "Q2_K": Family(256, 16, Levels(0, 3), 0, 15, True),
}
OBJECTIVES = ("none", "magnitude", "action_fisher", "amf")


def supports(qtype: str) -> bool:
    """Whether the Eq. 11 alternation is implemented for this type (else importance goes to the encoder)."""
    return qtype.upper() in FAMILIES


def element_weights(w: torch.Tensor, fisher: torch.Tensor | None, block: int, floor: float = 1e-3) -> torch.Tensor:
    """Eq. 10: omega_i = F_i * w_i^2 / mean_{j in block} w_j^2 (F = 1 without Fisher), floored per block.

    The floor (a fraction of the block's mean weight) keeps every block's scale determined when
    Fisher vanishes on it.
    """
    rows, cols = w.shape
    x = w.to(torch.float32).reshape(-1, block)
    mag = x * x / (x * x).mean(-1, keepdim=True).clamp(min=1e-30)
    om = mag if fisher is None else fisher.to(x.device, torch.float32).reshape(-1, block) * mag
    om = om + floor * om.mean(-1, keepdim=True).clamp(min=1e-30)
    return om.reshape(rows, cols)


# ------------------------------------------------------------------ reading the encoder's choice
def _f16(b: torch.Tensor) -> torch.Tensor:
    return b.contiguous().view(torch.float16).reshape(-1).to(torch.float32)


def _k4_codes(sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12-byte Q4_K/Q5_K field -> eight 6-bit scale codes and eight 6-bit min codes."""
    s = torch.cat([sc[:, 0:4] & 63, (sc[:, 8:12] & 15) | ((sc[:, 0:4] >> 6) << 4)], 1)
    m = torch.cat([sc[:, 4:8] & 63, (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)], 1)
    return s.float(), m.float()


def read_scales(blocks: torch.Tensor, qtype: str) -> dict[str, torch.Tensor]:
    """d (and dmin), sub-block codes (and min codes) of encoded blocks [S, type_size]."""
    t = qtype.upper()
    b = blocks
    if t in ("Q8_0", "IQ4_NL"):
        return {"d": _f16(b[:, 0:2])}
    if t == "Q6_K":
        return {"d": _f16(b[:, 208:210]), "c": b[:, 192:208].contiguous().view(torch.int8).float()}
    if t == "Q3_K":
        sc = b[:, 96:108]
        lo = torch.cat([sc[:, 0:8] & 15, sc[:, 0:8] >> 4], 1)
        hi = torch.cat([(sc[:, 8:12] >> (2 * k)) & 3 for k in range(4)], 1)
        return {"d": _f16(b[:, 108:110]), "c": (lo | (hi << 4)).float() - 32}
    if t == "IQ4_XS":
        sh = b[:, 2].to(torch.int32) | (b[:, 3].to(torch.int32) << 8)
        lo = torch.stack([b[:, 4:8] & 15, b[:, 4:8] >> 4], 2).reshape(-1, 8).to(torch.int32)
        hi = torch.stack([(sh >> (2 * i)) & 3 for i in range(8)], 1)
        return {"d": _f16(b[:, 0:2]), "c": (lo | (hi << 4)).float() - 32}
    if t in ("Q4_K", "Q5_K"):
        s, m = _k4_codes(b[:, 4:16])
        return {"d": _f16(b[:, 0:2]), "dm": _f16(b[:, 2:4]), "c": s, "m": m}
    if t == "Q2_K":
        sc = b[:, 0:16]
        return {"d": _f16(b[:, 80:82]), "dm": _f16(b[:, 82:84]), "c": (sc & 15).float(), "m": (sc >> 4).float()}
    raise ValueError(f"no scale reader for {qtype}")


# ------------------------------------------------------------------ the alternation
def _inv(e: torch.Tensor) -> torch.Tensor:
    return torch.where(e != 0, 1.0 / torch.where(e != 0, e, torch.ones_like(e)), torch.zeros_like(e))


def _f16r(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(-65504.0, 65504.0).to(torch.float16).to(torch.float32)


@dataclass
class BlockState:
    """Scales and levels of S super-blocks: d [S], c [S, nsub], optional dm [S], m [S, nsub], q [S, nsub, n]."""

    d: torch.Tensor
    c: torch.Tensor
    q: torch.Tensor
    dm: torch.Tensor | None = None
    m: torch.Tensor | None = None

    def recon(self) -> torch.Tensor:
        """x_hat [S, nsub, n]."""
        y = (self.d[:, None] * self.c)[..., None] * self.q
        if self.dm is not None:
            y = y - (self.dm[:, None] * self.m)[..., None]
        return y


def _assign(fam: Family, x: torch.Tensor, st: BlockState) -> torch.Tensor:
    """q = the nearest level for the current scales, exactly as the encoder does for fixed scales."""
    e = st.d[:, None] * st.c
    if fam.affine:
        o = st.dm[:, None] * st.m
        q = torch.round((x + o[..., None]) * _inv(e)[..., None]).clamp(0, fam.levels.hi)
        return torch.where(e[..., None] > 0, q, torch.zeros_like(q))
    _, q = fam.levels.nearest(x * _inv(e)[..., None])
    return torch.where(e[..., None] != 0, q, torch.zeros_like(q))


def _err(x, om, st: BlockState) -> torch.Tensor:
    """Weighted error per sub-block [S, nsub]."""
    r = x - st.recon()
    return (om * r * r).sum(-1)


def _keep(better: torch.Tensor, new: BlockState, old: BlockState) -> BlockState:
    """Per super-block choice between two states."""

    def pick(a, b):
        if a is None:
            return None
        return torch.where(better.reshape((-1,) + (1,) * (a.dim() - 1)), a, b)

    return BlockState(pick(new.d, old.d), pick(new.c, old.c), pick(new.q, old.q), pick(new.dm, old.dm), pick(new.m, old.m))


def _solve_d(fam: Family, x, om, st: BlockState) -> BlockState:
    """Closed-form weighted least squares for d (and dmin) with codes and q fixed, then f16."""
    y = st.c[..., None] * st.q
    if not fam.affine:
        num = (om * x * y).sum((-1, -2))
        den = (om * y * y).sum((-1, -2))
        d = torch.where(den > 0, num / den.clamp(min=1e-30), st.d)
        return BlockState(_f16r(d), st.c, st.q)
    z = st.m[..., None].expand_as(x)  # x ~ d*y - dm*z
    syy, szz, syz = (om * y * y).sum((-1, -2)), (om * z * z).sum((-1, -2)), (om * y * z).sum((-1, -2))
    sxy, sxz = (om * x * y).sum((-1, -2)), (om * x * z).sum((-1, -2))
    det = syy * szz - syz * syz
    ok = det > 1e-30 * (syy * szz).clamp(min=1e-30)
    safe = torch.where(ok, det, torch.ones_like(det))
    d = torch.where(ok, (sxy * szz - sxz * syz) / safe, st.d)
    dm = torch.where(ok, (sxy * syz - sxz * syy) / safe, st.dm)
    return BlockState(_f16r(d), st.c, st.q, _f16r(dm), st.m)


def _solve_codes(fam: Family, x, om, st: BlockState) -> BlockState:
    """Each sub-block's integer scale code (then min code) given d, dmin and q: rounded 1-D optimum."""
    dd = st.d[:, None]
    if fam.affine:
        t = x + (st.dm[:, None] * st.m)[..., None]
        num, den = (om * t * st.q).sum(-1), (om * st.q * st.q).sum(-1) * dd
        c = torch.where(den.abs() > 0, torch.round(num / torch.where(den.abs() > 0, den, torch.ones_like(den))), st.c)
        c = c.clamp(fam.cmin, fam.cmax)
        dmm = st.dm[:, None]
        r = (dd * c)[..., None] * st.q - x  # x ~ e q - dm m  =>  dm m ~ e q - x
        num, den = (om * r).sum(-1), om.sum(-1) * dmm
        m = torch.where(den.abs() > 0, torch.round(num / torch.where(den.abs() > 0, den, torch.ones_like(den))), st.m)
        return BlockState(st.d, c, st.q, st.dm, m.clamp(fam.cmin, fam.cmax))
    num, den = (om * x * st.q).sum(-1), (om * st.q * st.q).sum(-1) * dd
    c = torch.where(den.abs() > 0, torch.round(num / torch.where(den.abs() > 0, den, torch.ones_like(den))), st.c)
    return BlockState(st.d, c.clamp(fam.cmin, fam.cmax), st.q)


def initial_state(w: torch.Tensor, qtype: str, importance: torch.Tensor | None = None) -> BlockState:
    """The shared encoder's choice (unweighted unless `importance`), read back from its bytes."""
    fam = FAMILIES[qtype.upper()]
    blocks = encode(w, qtype, importance=importance).reshape(-1, _type_size(qtype))
    f = read_scales(blocks, qtype)
    S = blocks.shape[0]
    c = f.get("c", torch.ones(S, 1)).reshape(S, fam.nsub).to(w.device)
    st = BlockState(f["d"].to(w.device), c, torch.zeros(0), f.get("dm"), f.get("m"))
    if st.dm is not None:
        st.dm, st.m = st.dm.to(w.device), st.m.reshape(S, fam.nsub).to(w.device)
    x = w.to(torch.float32).reshape(S, fam.nsub, -1)
    st.q = _assign(fam, x, st)
    return st


def _type_size(qtype: str) -> int:
    from omnimodel.quant import get_format

    return get_format(qtype).type_size


@dataclass
class ScaleResult:
    """Optimised scales for one tensor plus the weighted error before and after, and per-round errors."""

    scales: SymmetricScales | AffineScales
    err_init: float
    err_final: float
    history: list[float]
    norm: float  # sum omega w^2, to express errors relative to the signal


def optimise(w: torch.Tensor, qtype: str, omega: torch.Tensor, rounds: int = 4, init_importance: torch.Tensor | None = None) -> ScaleResult:
    """Run the Eq. 11 alternation for a [rows, cols] matrix of type `qtype` with element weights omega."""
    fam = FAMILIES[qtype.upper()]
    rows, cols = w.shape
    st = initial_state(w, qtype, init_importance)
    S = st.d.shape[0]
    x = w.to(torch.float32).reshape(S, fam.nsub, -1)
    om = omega.to(x.device, torch.float32).reshape(S, fam.nsub, -1)
    err = _err(x, om, st).sum(-1)
    history = [float(err.sum())]
    err_init = history[0]
    for _ in range(rounds):
        steps = [_solve_d]
        if fam.has_codes:
            steps.append(_solve_codes)
        for step in steps:
            cand = step(fam, x, om, st)
            cand.q = _assign(fam, x, cand)  # fix the scales: nearest levels (never worse for them)
            e2 = _err(x, om, cand).sum(-1)
            better = e2 < err
            st = _keep(better, cand, st)
            err = torch.where(better, e2, err)
        history.append(float(err.sum()))
    bpr = cols // fam.block
    if fam.affine:
        scales = AffineScales(st.d.reshape(rows, bpr), st.dm.reshape(rows, bpr),
                              st.c.reshape(rows, bpr, fam.nsub), st.m.reshape(rows, bpr, fam.nsub))  # fmt: skip
    elif fam.has_codes:
        scales = SymmetricScales(st.d.reshape(rows, bpr), st.c.reshape(rows, bpr, fam.nsub))
    else:
        scales = SymmetricScales(st.d.reshape(rows, bpr))
    norm = float((om * x * x).sum())
    return ScaleResult(scales, err_init, history[-1], history, norm)
