"""Stage 1 bit allocation: sensitivities, the error model, layer groups and the greedy gain-per-bit
solver that meets an average-bpw budget over the quantized matrices.

Error model: the paper's law e_l(t) = s_l 2^(-2 b_t) (default), or `measured`: e_l(t) = s_l r_l(t)
with r_l(t) the relative squared error that type t actually leaves on matrix l (measured by
encoding a row sample). The law treats every type of equal bits alike; the lattice types at 2-3
bits lose far more than 2^(-2b) says, which the measured model sees.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from omnimodel.errors import QuantError

log = logging.getLogger(__name__)

# Effective bits per weight (scales included) of the candidate types, cheapest first (spec table).
TYPE_BITS: dict[str, float] = {
    "IQ1_S": 1.5625,
    "IQ1_M": 1.75,
    "IQ2_XXS": 2.0625,
    "IQ2_XS": 2.3125,
    "IQ2_S": 2.5625,
    "Q2_K": 2.625,
    "IQ3_XXS": 3.0625,
    "Q3_K": 3.4375,
    "IQ3_S": 3.4375,
    "IQ4_XS": 4.25,
    "Q4_K": 4.5,
    "IQ4_NL": 4.5,
    "Q5_K": 5.5,
    "Q6_K": 6.5625,
    "Q8_0": 8.5,
    "F16": 16.0,
}
BLOCK = {"IQ4_NL": 32, "Q8_0": 32, "F16": 1}  # everything else: super-blocks of 256
PAPER_CANDIDATES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K", "IQ3_XXS", "Q3_K", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K", "Q8_0")
# the ternary types join the candidates below 2-bit budgets (ActQuantOptions.iq1)
IQ1_CANDIDATES = ("IQ1_S", "IQ1_M")
IQ1_AUTO_BELOW = 2.3125  # IQ2_XS: under it the 2-bit types alone leave almost no room to mix
# used only for matrices whose rows fit none of the candidates (e.g. SigLIP's 1152/4304 columns)
ROW_FALLBACKS = ("IQ4_NL", "Q8_0", "F16")


def available_candidates(wanted: tuple[str, ...] = PAPER_CANDIDATES) -> list[str]:
    """The wanted candidate types that the shared encoders can write, cheapest first."""
    from omnimodel.quant import supported_types

    have = set(supported_types())
    return sorted((t for t in wanted if t in have), key=TYPE_BITS.__getitem__)


def fitting_candidates(cols: int, candidates: list[str]) -> list[str]:
    """Candidates whose block divides the row length; the row fallbacks when none does."""
    fit = [t for t in candidates if cols % BLOCK.get(t, 256) == 0]
    if fit:
        return fit
    return [t for t in ROW_FALLBACKS if cols % BLOCK.get(t, 256) == 0][:1] or ["F16"]


_GROUP = re.compile(r"^((?:[a-z][a-z0-9]*\.)?blk\.\d+)\.")


def layer_group(name: str) -> str:
    """The transformer layer a GGUF tensor belongs to (`v.blk.3`, `v2.blk.0`, `blk.7`, an action expert's
    `aex.blk.2`: a stack's prefix, then blk.N), else its own name."""
    m = _GROUP.match(name)
    return m.group(1) if m else name


def sensitivity(hsic_x: np.ndarray, hsic_a: np.ndarray, alpha: float = 1.0, beta: float = 1.0, shift: bool = False) -> np.ndarray:
    """s_l = -alpha HSIC(X, Y_l) + beta HSIC(Y_l, A); negatives clamped to 0, or the whole set shifted to min 0."""
    s = -alpha * np.asarray(hsic_x, np.float64) + beta * np.asarray(hsic_a, np.float64)
    if shift:
        return s - min(float(s.min()), 0.0) if s.size else s
    return np.clip(s, 0.0, None)


def predicted_error(s: float, qtype: str, rel: dict[str, float] | None = None) -> float:
    """e_l(t) = s_l 2^(-2 b_t) (Lloyd law), or s_l r_l(t) given measured relative errors `rel`."""
    if rel is not None and qtype in rel:
        return float(s) * float(rel[qtype])
    return float(s) * 2.0 ** (-2.0 * TYPE_BITS[qtype])


def measure_errors(w, types: list[str], rows: int = 256) -> dict[str, float]:
    """r(t) = ||W_s - deq(enc_t(W_s))||^2 / ||W_s||^2 for each type, on `rows` evenly spaced rows W_s."""
    import torch

    from omnimodel.quant import decode, encode

    w = torch.as_tensor(w)
    if w.shape[0] > rows:
        w = w[torch.linspace(0, w.shape[0] - 1, rows).round().long()]
    x = w.to(torch.float32)
    norm = float((x * x).sum().clamp(min=1e-30))
    out = {}
    for t in types:
        xq = decode(encode(x, t), t, tuple(x.shape)).to(x.device, torch.float32)
        out[t] = float(((x - xq) ** 2).sum()) / norm
    return out


def pareto_types(types: list[str], rel: dict[str, float]) -> list[str]:
    """Types (cheapest first) whose measured error is below that of every cheaper type: the others
    cost bits for no gain on this matrix."""
    out: list[str] = []
    for t in sorted(types, key=TYPE_BITS.__getitem__):
        if not out or rel.get(t, np.inf) < rel.get(out[-1], np.inf):
            out.append(t)
    return out


@dataclass
class Matrix:
    """One matrix in the allocation problem: name, element count, sensitivity, allowed types (cheapest first)."""

    name: str
    numel: int
    s: float
    types: list[str]
    group: str = ""
    fixed: str | None = None  # a type decided outside the solver (counts in the budget)
    rel: dict[str, float] | None = None  # measured relative error per type (error_model=measured)

    def error(self, qtype: str) -> float:
        """Predicted error of this matrix at `qtype`."""
        return predicted_error(self.s, qtype, self.rel)

    def __post_init__(self) -> None:
        if not self.group:
            self.group = layer_group(self.name)


@dataclass
class Allocation:
    """The solver's answer: a type per matrix, the average bits, the objective and the trace length."""

    types: dict[str, str]
    bpw: float
    objective: float
    steps: int
    budget: float
    feasible: bool
    group_errors: dict[str, float] = field(default_factory=dict)


def objective(mats: list[Matrix], types: dict[str, str]) -> float:
    """Sum over layer groups of (sum of predicted errors in the group)^2."""
    groups: dict[str, float] = {}
    for m in mats:
        groups[m.group] = groups.get(m.group, 0.0) + m.error(types[m.name])
    return float(sum(e * e for e in groups.values()))


def average_bits(mats: list[Matrix], types: dict[str, str]) -> float:
    """Element-weighted average effective bits of the given types."""
    n = sum(m.numel for m in mats)
    return sum(m.numel * TYPE_BITS[types[m.name]] for m in mats) / n if n else 0.0


def greedy_allocate(
    mats: list[Matrix], budget: float, skip: bool = True, start: dict[str, str] | None = None, polish: bool = True
) -> Allocation:
    """Greedy gain-per-bit upgrades from the cheapest allowed type while sum n_l b_l <= budget * sum n_l.

    Each step applies the single upgrade (l: t -> next allowed type) with the largest
    decrease of sum_j E_j^2 per extra bit; `skip` passes over upgrades that break the budget
    (the authors' preset and our default), otherwise the solver stops at the first best upgrade
    that does not fit. Zero-gain upgrades still spend leftover budget (cheapest type first).
    `polish` then applies improving one-level exchanges (one matrix up, another down) that keep
    the budget, which repairs the greedy's knapsack slips (steps of unequal bits).
    """
    if not mats:
        return Allocation({}, 0.0, 0.0, 0, budget, True)
    names = [m.name for m in mats]
    idx = {n: i for i, n in enumerate(names)}
    if len(idx) != len(names):
        raise QuantError("allocation: duplicate matrix names")
    ladders = [[m.fixed] if m.fixed else list(m.types) for m in mats]
    level = np.zeros(len(mats), dtype=np.int64)
    if start:
        for n, t in start.items():
            i = idx[n]
            if t in ladders[i]:
                level[i] = ladders[i].index(t)
    numel = np.array([m.numel for m in mats], dtype=np.float64)
    etab = [np.array([m.error(t) for t in lad]) for m, lad in zip(mats, ladders, strict=True)]
    bits = lambda i, k: TYPE_BITS[ladders[i][k]]  # noqa: E731
    groups = sorted({m.group for m in mats})
    gidx = np.array([groups.index(m.group) for m in mats])
    members = [np.flatnonzero(gidx == g) for g in range(len(groups))]
    err = np.array([etab[i][level[i]] for i in range(len(mats))])
    E = np.zeros(len(groups))
    np.add.at(E, gidx, err)
    total_n = numel.sum()
    cap = budget * total_n + 1e-6 * total_n  # float slack
    used = float(sum(numel[i] * bits(i, level[i]) for i in range(len(mats))))
    feasible = used <= cap

    ratio = np.full(len(mats), -np.inf)
    dbits = np.full(len(mats), np.inf)
    cur_b = np.array([bits(i, level[i]) for i in range(len(mats))])

    def refresh(i: int) -> None:
        if level[i] + 1 >= len(ladders[i]):
            ratio[i], dbits[i] = -np.inf, np.inf
            return
        nb = bits(i, level[i] + 1)
        new_e = etab[i][level[i] + 1]
        g = gidx[i]
        e_new_group = E[g] - err[i] + new_e
        gain = E[g] ** 2 - e_new_group**2
        dbits[i] = numel[i] * (nb - cur_b[i])
        ratio[i] = gain / dbits[i]

    for i in range(len(mats)):
        refresh(i)
    steps = 0
    while True:
        fits = used + dbits <= cap
        if skip:
            cand = np.where(fits, ratio, -np.inf)
        else:
            cand = ratio
        if not np.isfinite(cand).any():
            break
        best = cand.max()
        # ties (notably zero gain): the cheapest current type, then the earlier entry
        tied = np.flatnonzero(cand >= best - 1e-15 * max(abs(best), 1e-300))
        i = int(tied[np.argmin(cur_b[tied])]) if len(tied) > 1 else int(tied[0])
        if not skip and not fits[i]:
            break
        level[i] += 1
        nb = bits(i, level[i])
        used += numel[i] * (nb - cur_b[i])
        cur_b[i] = nb
        g = gidx[i]
        new_e = etab[i][level[i]]
        E[g] += new_e - err[i]
        err[i] = new_e
        for j in members[g]:
            refresh(int(j))
        steps += 1
    if polish:
        used = _polish(level, ladders, numel, etab, gidx, len(groups), cap)
        err = np.array([etab[i][level[i]] for i in range(len(mats))])
        E = np.zeros(len(groups))
        np.add.at(E, gidx, err)
    types = {names[i]: ladders[i][level[i]] for i in range(len(mats))}
    return Allocation(
        types=types,
        bpw=used / total_n,
        objective=float((E**2).sum()),
        steps=steps,
        budget=budget,
        feasible=feasible,
        group_errors={groups[g]: float(E[g]) for g in range(len(groups))},
    )


def _polish(level, ladders, numel, etab, gidx, n_groups: int, cap: float, max_moves: int | None = None) -> float:
    """Best-improvement local search over moves {i up one level, j down one level (or none)}; returns bits used."""
    n = len(level)
    max_moves = max_moves or 20 * n + 100
    tb = [np.array([TYPE_BITS[t] for t in lad]) for lad in ladders]
    for _ in range(max_moves):
        b = np.array([tb[i][level[i]] for i in range(n)])
        err = np.array([etab[i][level[i]] for i in range(n)])
        E = np.zeros(n_groups)
        np.add.at(E, gidx, err)
        up_ok = np.array([level[i] + 1 < len(tb[i]) for i in range(n)])
        dn_ok = level > 0
        b_up = np.array([tb[i][level[i] + 1] if up_ok[i] else b[i] for i in range(n)])
        b_dn = np.array([tb[i][level[i] - 1] if dn_ok[i] else b[i] for i in range(n)])
        e_up = np.array([etab[i][level[i] + 1] if up_ok[i] else err[i] for i in range(n)])
        e_dn = np.array([etab[i][level[i] - 1] if dn_ok[i] else err[i] for i in range(n)])
        d_up = e_up - err  # change of the group error (<= 0 for a monotone ladder)
        d_dn = e_dn - err  # (>= 0)
        c_up = numel * (b_up - b)
        c_dn = numel * (b_dn - b)
        used = float((numel * b).sum())
        Eu, Ed = E[gidx], E[gidx]
        # pair moves: i up, j down
        same = gidx[:, None] == gidx[None, :]
        delta = np.where(
            same,
            (Eu[:, None] + d_up[:, None] + d_dn[None, :]) ** 2 - Eu[:, None] ** 2,
            ((Eu + d_up) ** 2 - Eu**2)[:, None] + ((Ed + d_dn) ** 2 - Ed**2)[None, :],
        )
        ok = up_ok[:, None] & dn_ok[None, :] & (used + c_up[:, None] + c_dn[None, :] <= cap)
        np.fill_diagonal(ok, False)
        delta = np.where(ok, delta, np.inf)
        # single upgrades that still fit
        single = np.where(up_ok & (used + c_up <= cap), (Eu + d_up) ** 2 - Eu**2, np.inf)
        k = int(np.argmin(delta))
        best_pair = delta.flat[k]
        best_single = single.min() if n else np.inf
        scale = max(float((E**2).sum()), 1e-300)
        if min(best_pair, best_single) >= -1e-12 * scale:
            return used
        if best_single <= best_pair:
            level[int(np.argmin(single))] += 1
        else:
            i, j = divmod(k, n)
            level[i] += 1
            level[j] -= 1
    return float(sum(numel[i] * tb[i][level[i]] for i in range(n)))


def exhaustive_allocate(mats: list[Matrix], budget: float) -> Allocation:
    """The exact optimum by enumeration (small problems only: for tests)."""
    import itertools

    ladders = [[m.fixed] if m.fixed else list(m.types) for m in mats]
    if np.prod([len(x) for x in ladders], dtype=np.float64) > 2e6:
        raise QuantError("exhaustive_allocate: problem too large to enumerate")
    best: tuple[float, dict[str, str]] | None = None
    for combo in itertools.product(*ladders):
        types = {m.name: t for m, t in zip(mats, combo, strict=True)}
        if average_bits(mats, types) > budget + 1e-6:
            continue
        obj = objective(mats, types)
        if best is None or obj < best[0] - 1e-18:
            best = (obj, types)
    if best is None:
        cheapest = {m.name: lad[0] for m, lad in zip(mats, ladders, strict=True)}
        return Allocation(cheapest, average_bits(mats, cheapest), objective(mats, cheapest), 0, budget, False)
    return Allocation(best[1], average_bits(mats, best[1]), best[0], 0, budget, True)


def uniform_allocate(mats: list[Matrix], budget: float) -> Allocation:
    """Ablation: one type for every matrix, the most expensive one whose average stays within the budget."""

    def at_most(m: Matrix, t: str) -> str:
        if m.fixed:
            return m.fixed
        ok = [x for x in m.types if TYPE_BITS[x] <= TYPE_BITS[t]]
        return ok[-1] if ok else m.types[0]

    best = {m.name: (m.fixed or m.types[0]) for m in mats}
    for t in sorted({t for m in mats for t in m.types}, key=TYPE_BITS.__getitem__):
        types = {m.name: at_most(m, t) for m in mats}
        if average_bits(mats, types) <= budget + 1e-6:
            best = types
    bpw = average_bits(mats, best)
    return Allocation(best, bpw, objective(mats, best), 0, budget, bpw <= budget + 1e-6)
