"""The `actquant` quantizer: HSIC bit allocation (Stage 1) and Action-Mixed-Fisher scale
optimisation (Stage 2), with the paper's ablation switches and the authors' preset.

Spec: `actquant:3.0` or `actquant:3.0,objective=magnitude,allocation=uniform,preset=authors`.
The plan holds, per GGUF matrix, its type and its optimised block scales (small), so memory stays
at one tensor's worth of work at a time; quant_report.json records every choice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actquant_plugin import allocate
from actquant_plugin.allocate import Matrix
from omnimodel.errors import QuantError
from omnimodel.quant.plugin import QuantContext, Quantizer, TensorPlan

log = logging.getLogger(__name__)
OBJECTIVES = ("none", "magnitude", "action_fisher", "amf")


@dataclass
class ActQuantOptions:
    """Every switch of the method; [choice] defaults follow shared/specs/actquant-method.md."""

    bpw: float | None = None
    preset: str = "paper"  # paper | authors
    allocation: str = "hsic"  # hsic | uniform
    objective: str = "amf"  # none | magnitude | action_fisher | amf
    alpha: float = 1.0
    beta: float = 1.0
    shift: bool = False
    error_model: str = "law"  # law (the paper's 2^-2b) | measured (each matrix's error per type)
    error_rows: int = 256  # rows sampled per matrix for error_model=measured
    lattice_weight: str = "llama"  # importance for types without the Eq. 11 alternation: llama | eq10
    # the token table has no HSIC term (its input is a token id): fisher = a sensitivity from its AMF Fisher
    # energy, put on the HSIC scale by the LLM matrices' median s/energy, allocated like any matrix;
    # base = the LLM's base type (the spec's rule, the authors' code); budget = the budget's uniform type
    embed: str = "fisher"  # fisher | base | budget
    # the ternary types IQ1_S (1.5625 bpw) and IQ1_M (1.75): auto = candidates for every matrix below
    # IQ2_XS's 2.3125 bpw (where the 2-bit types alone leave almost no room to mix), and at any budget
    # IQ1_S for the matrices the action never reads (LM head, tower blocks after the feature layer);
    # on = candidates for every matrix at any budget; off = never
    iq1: str = "auto"  # auto | on | off
    # RBF bandwidth: auto = median (the classical heuristic, s = median pairwise distance) for the
    # paper preset, hbar (the authors' rule, s = median SQUARED distance) for the authors' preset
    bandwidth: str = "auto"  # auto | median | hbar
    # what HSIC(Y_l, A) compares with: auto = the arch's choice (its calibration hooks' hsic_target: the
    # ground-truth chunks for an action-head policy, the predicted chunk for a flow-matching one);
    # truth = the ground-truth normalised chunks; output = the model's action output of the capture forward
    hsic_target: str = "auto"  # auto | truth | output
    lam: float = 0.5  # with an action-token head; forced to 1 without one
    rounds: int = 4
    skip: bool = True
    calib_frames: int | None = None
    seed: int = 0
    fisher_batch: int = 1
    fisher_gb: float | None = None  # cap of the float32 Fisher accumulators per pass (default: 16 GB on CUDA)
    device: str | None = None
    check_layout: bool = True
    report: str | None = None

    def validate(self) -> None:
        """Raise QuantError on an unknown switch value."""
        checks = {"preset": ("paper", "authors"), "allocation": ("hsic", "uniform"), "objective": OBJECTIVES,
                  "bandwidth": ("auto", "median", "hbar"), "error_model": ("law", "measured"),
                  "hsic_target": ("auto", "truth", "output"),
                  "lattice_weight": ("llama", "eq10"), "embed": ("fisher", "base", "budget"),
                  "iq1": ("auto", "on", "off")}  # fmt: skip
        for key, allowed in checks.items():
            if getattr(self, key) not in allowed:
                raise QuantError(f"actquant: {key}={getattr(self, key)!r}; choose one of {', '.join(allowed)}")
        if not 0.0 <= self.lam <= 1.0:
            raise QuantError(f"actquant: lam={self.lam} must lie in [0, 1]")

    @staticmethod
    def parse(arg: str | None) -> ActQuantOptions:
        """`3.0,objective=magnitude,...` -> options (the first bare number is the budget)."""
        o = ActQuantOptions()
        if not arg:
            return o
        kinds = {f.name: f.type for f in dataclasses.fields(ActQuantOptions)}
        for part in (p.strip() for p in arg.split(",") if p.strip()):
            key, eq, val = part.partition("=")
            if not eq:
                key, val = "bpw", part
            key = key.strip().replace("-", "_")
            if key not in kinds:
                raise QuantError(f"actquant: unknown option {key!r}; known: {', '.join(kinds)}")
            cur = getattr(o, key)
            try:
                if isinstance(cur, bool):
                    v: Any = val.lower() in ("1", "true", "yes", "on")
                elif key in ("bpw", "alpha", "beta", "lam", "fisher_gb"):
                    v = float(val)
                elif key in ("rounds", "calib_frames", "seed", "fisher_batch", "error_rows"):
                    v = int(val)
                else:
                    v = val
            except ValueError:
                raise QuantError(f"actquant: option {key}={val!r} is not a number") from None
            setattr(o, key, v)
        o.validate()
        return o


@dataclass
class TensorReport:
    """One matrix in quant_report.json."""

    type: str
    numel: int
    group: str
    hsic_x: float | None = None
    hsic_a: float | None = None
    sensitivity: float | None = None
    predicted_error: float | None = None
    achieved_error_init: float | None = None
    achieved_error: float | None = None
    rel_weighted_error: float | None = None
    measured_rel: dict[str, float] | None = None  # error_model=measured: relative error per candidate type
    fisher_energy: float | None = None  # embed=fisher: sum F w^2 (the LLM matrices and the token table)
    scales: str = "encoder"


@dataclass
class ActQuantReport:
    """What quant_report.json holds: options, budget, achieved bits, stage timings, per-tensor rows."""

    method: str
    options: dict
    budget_bpw: float
    planned_bpw: float
    objective_value: float
    calibration: dict
    timings: dict = field(default_factory=dict)
    tensors: dict[str, TensorReport] = field(default_factory=dict)
    embed: dict = field(default_factory=dict)  # how the token table's type was chosen (rule, kappa, energy, s)
    unread: list = field(default_factory=list)  # matrices the action never reads, fixed at the cheapest type
    dead: list = field(default_factory=list)  # the arch's dead tensors: the cheapest type, outside the budget
    memory: dict = field(default_factory=dict)  # peak memory per stage (GB): process RSS, and CUDA when used

    def to_json(self) -> dict:
        """Plain JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _device(opt: str | None) -> torch.device:
    if opt:
        return torch.device(opt)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ActQuant(Quantizer):
    """Action-guided mixed-precision quantization (HSIC allocation + AMF scale optimisation)."""

    def __init__(self, options: ActQuantOptions | None = None):
        self.opts = options or ActQuantOptions()
        self.opts.validate()
        self.name = "actquant"
        self.report: ActQuantReport | None = None

    # ---------------------------------------------------------------- helpers
    def bandwidth_rule(self) -> str:
        """The RBF bandwidth rule in use (`auto` resolved by the preset)."""
        if self.opts.bandwidth != "auto":
            return self.opts.bandwidth
        return "hbar" if self.opts.preset == "authors" else "median"

    def _matrices(self, tensors: Mapping[str, torch.Tensor], targets: dict, terms: dict, candidates: list[str],
                  budget: float, unread: set[str]) -> list[Matrix]:  # fmt: skip
        """The allocation problem: targets with sensitivities; the matrices the action never reads fixed
        at the cheapest type (`unread`, from `_unread`; else the LM head at the base type), the token table allocated with its
        Fisher-bridged sensitivity (`embed=fisher`, when `terms` has it), at the budget's uniform type
        (`embed=budget`) or at the base type."""
        from omnimodel.quant import supported_types

        o = self.opts
        base = "IQ2_XS" if o.preset == "authors" and "IQ2_XS" in supported_types() else candidates[0]
        mats = []
        floor = self.candidates(0.0) if unread else []  # the cheapest types there are, IQ1_S first
        mix_types = None
        if o.preset == "authors":
            from actquant_plugin.baselines import mix_types as mix

            mix_types = mix("q4_k_m", {n: tuple(t.shape) for n, t in tensors.items()})
        for name, w in tensors.items():
            cols = int(w.shape[1])
            types = allocate.fitting_candidates(cols, candidates)
            if o.preset == "authors" and base in types:
                types = types[types.index(base) :]
            fixed = None
            if name in unread:  # the action never sees it: the cheapest type there is
                fixed = allocate.fitting_candidates(cols, floor)[0]
            elif name == "token_embd.weight" and self.embed_rule() == "budget":
                fit = [t for t in types if allocate.TYPE_BITS[t] <= budget + 1e-9]
                fixed = fit[-1] if fit else types[0]
            elif name not in targets and name not in terms:
                fixed = allocate.fitting_candidates(cols, [base])[0] if cols % allocate.BLOCK.get(base, 256) == 0 else types[0]
            elif o.preset == "authors" and targets[name].component == "vision":
                fixed = allocate.fitting_candidates(cols, [mix_types[name]])[0]
            s = terms.get(name, (0.0, 0.0, 0.0))[2]
            rel = None
            if o.error_model == "measured" and not fixed and len(types) > 1:
                rel = allocate.measure_errors(w, types, o.error_rows)
                types = allocate.pareto_types(types, rel)
            mats.append(Matrix(name, int(w.numel()), float(s), types, fixed=fixed, rel=rel))
        return mats

    def _unread(self, tensors: Mapping[str, torch.Tensor], targets: dict, terms: dict) -> list[str]:
        """The matrices the action path never reads: the LM head (a policy with an action head never runs it) and the targets no
        calibration forward pass reached (the tower blocks after the feature layer). Under the paper
        preset with HSIC allocation and iq1 not off they take the cheapest type (IQ1_S) at any budget;
        otherwise none is singled out."""
        o = self.opts
        if o.preset != "paper" or o.allocation != "hsic" or o.iq1 == "off":
            return []
        return [n for n in tensors if n == "output.weight" or (n in targets and n not in terms)]

    def candidates(self, budget: float) -> list[str]:
        """The candidate types for a budget: the paper's, plus the IQ1 types where `iq1` asks for them
        (never under the authors' preset, whose base type is IQ2_XS)."""
        o = self.opts
        iq1 = o.iq1 == "on" or (o.iq1 == "auto" and budget < allocate.IQ1_AUTO_BELOW)
        wanted = allocate.PAPER_CANDIDATES + (allocate.IQ1_CANDIDATES if iq1 and o.preset == "paper" else ())
        return allocate.available_candidates(wanted)

    def hsic_target(self, hooks) -> str:
        """What HSIC's A is: the option, or the arch's choice under `auto`."""
        return hooks.hsic_target if self.opts.hsic_target == "auto" else self.opts.hsic_target

    def embed_rule(self) -> str:
        """How the token table's type is chosen: the option, `base` under the authors' preset."""
        return "base" if self.opts.preset == "authors" else self.opts.embed

    def _embed_sensitivity(self, model, calib, tensors, targets, terms, device, dtype, hooks) -> tuple[dict, dict[str, float]]:
        """The token table's sensitivity on the HSIC scale, added to `terms` (in place).

        The table has no HSIC term: its input is a token id, and its output is part of the LLM's input
        X itself. Its AMF Fisher energy E = sum_i F_i w_i^2 (the first-order loss increase under a
        relative error, the quantity the 2^-2b law scales) is measured in one pass together with the
        energies of the LLM matrices, and kappa = median over those matrices of s_l / E_l maps it
        onto the sensitivity scale the solver uses: s_embed = kappa E_embed. Falls back to the base
        type (recorded) where the model has no token table among the tensors or no LLM matrix has
        both terms positive.
        """
        from actquant_plugin.fisher import fisher_energy

        name = "token_embd.weight"
        table = hooks.token_table(model)
        if name not in tensors or table is None:
            return {"rule": "base", "reason": "no token table among the tensors"}, {}
        key = "token_embd"  # a label: the table is the LLM's input embedding (the arch hooks find it)
        llm = {t.module_name: t for t in targets.values() if t.component == "llm" and t.name in terms}
        mods = {mn: t.module.weight for mn, t in llm.items()} | {key: table}
        rows = fisher_energy(model, calib, mods, self._lam(model, hooks), device, dtype, self.opts.fisher_batch,
                             "sum" if self.opts.preset == "authors" else "mean", hooks)  # fmt: skip
        energies = {t.name: float(rows[t.module_name][t.rows].sum()) for t in targets.values() if t.module_name in llm}
        energies[name] = float(rows[key].sum())
        ratios = [terms[n][2] / e for n, e in energies.items() if n != name and e > 0 and terms[n][2] > 0]
        if not ratios or energies[name] <= 0:
            return {"rule": "base", "reason": "no LLM matrix with positive sensitivity and Fisher energy"}, energies
        kappa = float(np.median(ratios))
        s = kappa * energies[name]
        terms[name] = (None, None, s)
        log.info("actquant: token table Fisher energy %.3g, kappa %.3g -> sensitivity %.3g", energies[name], kappa, s)
        return {"rule": "fisher", "kappa": kappa, "energy": energies[name], "sensitivity": s,
                "matrices": len(ratios)}, energies  # fmt: skip

    def _hsic_terms(self, model, calib, targets, device, dtype, hooks, timings, memory) -> dict[str, tuple[float, float, float]]:
        """(HSIC(X, Y_l), HSIC(Y_l, A), s_l) per target from pooled hidden states; A is what the arch's
        hooks say (the ground-truth chunks, or the model's action output of the same forward)."""
        from actquant_plugin.capture import pooled_states

        o = self.opts
        use = {n: t for n, t in targets.items() if o.preset == "paper" or t.component == "llm"}
        outputs: list[torch.Tensor] = []
        with _stage("calibration_forward", timings, memory, device):
            xs, ys = pooled_states(model, calib, use, device, dtype, hooks, outputs)
        with _stage("hsic", timings, memory, device):
            return self._hsic_kernels(xs, ys, outputs, calib, use, device, hooks)

    def _hsic_kernels(self, xs, ys, outputs, calib, use, device, hooks) -> dict[str, tuple[float, float, float]]:
        from actquant_plugin.hsic import center, hsic_gram, linear_kernel, rbf_kernel, zscore

        o = self.opts
        dev = device if device.type == "cuda" else torch.device("cpu")
        if self.hsic_target(hooks) == "output":
            acts = torch.cat(outputs).reshape(len(calib), -1)
        else:
            acts = torch.from_numpy(hooks.truth(calib).reshape(len(calib), -1))
        a = zscore(acts.to(dev))
        la = center(linear_kernel(a))
        rule = self.bandwidth_rule()
        kx = {k: center(rbf_kernel(v.to(dev), rule)) for k, v in xs.items()}
        names_, hx, ha = [], [], []
        for name, y in ys.items():
            k = rbf_kernel(y.to(dev), rule)
            names_.append(name)
            hx.append(hsic_gram(k, kx[use[name].tower]))
            ha.append(hsic_gram(k, la))
        s = allocate.sensitivity(np.array(hx), np.array(ha), o.alpha, o.beta, o.shift)
        return {n: (hx[i], ha[i], float(s[i])) for i, n in enumerate(names_)}

    def _omega(self, w: torch.Tensor, fisher: torch.Tensor | None, qtype: str) -> torch.Tensor | None:
        from actquant_plugin.scales import FAMILIES, element_weights, supports

        block = FAMILIES[qtype].block if qtype in FAMILIES else 256 if w.shape[1] % 256 == 0 else 32
        llama_style = self.opts.preset == "authors" or (not supports(qtype) and self.opts.lattice_weight == "llama")
        if llama_style:  # llama.cpp's weighting of a full-shape importance
            sigma2 = (w * w).mean(1, keepdim=True)
            f = fisher if fisher is not None else torch.ones_like(w)
            return f * torch.sqrt(sigma2 + w * w)
        return element_weights(w, fisher, block)

    # ---------------------------------------------------------------- the plan
    def plan(self, tensors: Mapping[str, torch.Tensor], ctx: QuantContext) -> dict[str, TensorPlan]:
        """Types from the HSIC allocation, scales from the AMF-weighted alternation, per GGUF matrix."""
        from actquant_plugin.targets import find_targets
        from omnimodel.ggufio import names

        o = self.opts
        budget = o.bpw if o.bpw is not None else ctx.budget_bpw
        if budget is None:
            raise QuantError("actquant needs a bits-per-weight budget: actquant:3.0 or --bpw 3.0")
        model = ctx.model
        if model is None:
            raise QuantError("actquant needs the PyTorch model (the converter passes it for checkpoints and presets)")
        cfg = model.cfg
        device = _device(o.device)
        dtype = next(model.parameters()).dtype
        model.to(device).eval()
        hooks = names.arch_for(config=cfg).quant_calibration()
        timings: dict[str, float] = {}
        memory: dict[str, dict[str, float]] = {}
        with _stage("calibration", timings, memory, device):
            calib = hooks.resolve(ctx.calibration, cfg, o.calib_frames, o.seed, ctx.extra)
            targets = find_targets(model, tensors, cfg, check=o.check_layout, tower_of=hooks.tower_of)
            # the arch's dead tensors: no action depends on them, so they take the cheapest type and
            # stay out of the budget, the HSIC terms and the Fisher
            dead = sorted(n for n in hooks.dead_tensors(list(tensors), cfg) if n in tensors)
            for n in dead:
                targets.pop(n, None)
        log.info("actquant: calibration %d frames, %d targets (%.1f s)", len(calib), len(targets), timings["calibration"])
        live = _Without(tensors, set(dead)) if dead else tensors
        candidates = self.candidates(budget)

        # Stage 1: sensitivities and the allocation
        terms: dict[str, tuple] = {}
        if o.allocation == "hsic":
            terms = self._hsic_terms(model, calib, targets, device, dtype, hooks, timings, memory)
        timings.setdefault("hsic", 0.0)
        log.info("actquant: HSIC terms (forward %.1f s, kernels %.1f s)", timings.get("calibration_forward", 0.0),
                 timings.get("hsic", 0.0))  # fmt: skip
        embed_info: dict[str, Any] = {"rule": self.embed_rule()}
        energies: dict[str, float] = {}
        if embed_info["rule"] == "fisher" and o.allocation == "hsic":
            with _stage("embed_fisher", timings, memory, device):
                embed_info, energies = self._embed_sensitivity(model, calib, live, targets, terms, device, dtype, hooks)
        t0 = time.perf_counter()
        unread = self._unread(live, targets, terms)
        mats = self._matrices(live, targets, terms, candidates, budget, set(unread))
        if o.allocation == "uniform":
            alloc = allocate.uniform_allocate(mats, budget)
        elif o.preset == "authors":
            llm = [m for m in mats if not m.fixed and m.name in targets]
            alloc = allocate.greedy_allocate(llm, budget, skip=True)
            alloc.types.update({m.name: m.fixed or m.types[0] for m in mats if m.name not in alloc.types})
        else:
            alloc = allocate.greedy_allocate(mats, budget, skip=o.skip)
        if not alloc.feasible:
            log.warning("actquant: budget %.3f bpw is below the cheapest allowed types (%.3f)", budget, alloc.bpw)
        timings["allocate"] = time.perf_counter() - t0
        log.info("actquant: allocation (%.1f s)", timings["allocate"])
        planned_bpw = allocate.average_bits(mats, alloc.types)

        # Stage 2: Fisher and scales, one Fisher group (one pass) and one tensor at a time
        plans: dict[str, TensorPlan] = {}
        rep: dict[str, TensorReport] = {}
        for m in mats:
            hx, ha, s = terms.get(m.name, (None, None, m.s))
            t = alloc.types[m.name]
            rep[m.name] = TensorReport(t, m.numel, m.group, hx, ha, s, m.error(t), measured_rel=m.rel,
                                       fisher_energy=energies.get(m.name))  # fmt: skip
        floor = self.candidates(0.0)
        for n in dead:
            plans[n] = TensorPlan(allocate.fitting_candidates(int(tensors[n].shape[1]), floor)[0])
        timings["fisher"] = timings["scales"] = 0.0
        self._stage2(tensors, targets, alloc.types, model, calib, device, dtype, plans, rep, timings, hooks, memory)
        for name in tensors:
            if name not in plans:
                plans[name] = TensorPlan(alloc.types[name])
        memory["total"] = _peak_memory(device, since_reset=False)
        self.report = ActQuantReport(
            method=self.name,
            options=dataclasses.asdict(o) | {"lam_effective": self._lam(model, hooks),
                                             "bandwidth_effective": self.bandwidth_rule(), "candidates": candidates,
                                             "hsic_target_effective": self.hsic_target(hooks)},
            budget_bpw=float(budget),
            planned_bpw=float(planned_bpw),
            objective_value=float(allocate.objective(mats, alloc.types)),
            calibration={"frames": len(calib), "source": calib.source, **hooks.describe()},
            timings=timings,
            tensors=rep,
            embed=embed_info,
            unread=unread,
            dead=dead,
            memory=memory,
        )
        path = o.report or ctx.extra.get("report_path")
        if path:
            write_report(self.report, path)
        return plans

    def _lam(self, model, hooks) -> float:
        if self.opts.objective == "action_fisher" or not hooks.has_aux_head(model):
            return 1.0
        return 0.6 if self.opts.preset == "authors" and self.opts.lam == 0.5 else self.opts.lam

    def _stage2(self, tensors, targets, types, model, calib, device, dtype, plans, rep, timings, hooks, memory) -> None:
        from actquant_plugin.fisher import fisher_diagonal, split_groups
        from actquant_plugin.scales import optimise, supports

        o = self.opts
        if o.objective == "none":
            return
        need_fisher = o.objective in ("action_fisher", "amf")
        by_module: dict[str, list] = {}
        for t in targets.values():
            by_module.setdefault(t.module_name, []).append(t)
        params = {mn: ts[0].module.weight for mn, ts in by_module.items()}
        cap = o.fisher_gb * 1e9 if o.fisher_gb else (16e9 if device.type == "cuda" else None)
        groups = split_groups(params, cap) if need_fisher else [list(params)]
        for group in groups:
            fisher: dict[str, torch.Tensor] = {}
            if need_fisher:
                with _stage("fisher", timings, memory, device):
                    fisher = fisher_diagonal(model, calib, {mn: params[mn] for mn in group}, self._lam(model, hooks),
                                             device, dtype, o.fisher_batch, "sum" if o.preset == "authors" else "mean",
                                             hooks)  # fmt: skip
            t0 = time.perf_counter()
            for mn in group:
                for t in by_module[mn]:
                    qtype = types[t.name]
                    w = tensors[t.name].to(device, torch.float32)
                    f = t.to_gguf(fisher[mn]) if need_fisher else None
                    om = self._omega(w, f, qtype)
                    if o.preset == "authors" or not supports(qtype):
                        if qtype not in ("F16", "F32", "BF16"):
                            plans[t.name] = TensorPlan(qtype, importance=None if om is None else om.cpu())
                            rep[t.name].scales = "importance"
                        continue
                    res = optimise(w, qtype, om, o.rounds)
                    plans[t.name] = TensorPlan(qtype, scales=_to_cpu(res.scales))
                    r = rep[t.name]
                    r.scales = "alternation"
                    r.achieved_error_init, r.achieved_error = res.err_init, res.err_final
                    r.rel_weighted_error = res.err_final / max(res.norm, 1e-30)
                fisher.pop(mn, None)
            timings["scales"] += time.perf_counter() - t0
            log.info("actquant: Fisher group of %d modules done (fisher %.1f s, scales %.1f s so far)", len(group),
                     timings["fisher"], timings["scales"])  # fmt: skip
            del fisher
            if device.type == "cuda":
                torch.cuda.empty_cache()


class _Without(Mapping):
    """A tensor mapping minus some names, still lazy (no tensor is computed until asked for)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], drop: set[str]):
        self._tensors, self._drop = tensors, drop

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self._drop:
            raise KeyError(name)
        return self._tensors[name]

    def __iter__(self):
        return (n for n in self._tensors if n not in self._drop)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _peak_memory(device: torch.device, since_reset: bool = True) -> dict[str, float]:
    """Peak memory in GB: the process's resident set (whole run) and, on CUDA, allocated tensors since the last reset."""
    import resource

    out = {"rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)}
    if device.type == "cuda":
        out["cuda_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
    return out


@contextmanager
def _stage(name: str, timings: dict[str, float], memory: dict | None = None, device: torch.device | None = None):
    """Time a stage into timings[name] (added up over repeats) and note the peak memory it reached."""
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        if memory is not None and device is not None:
            peak = _peak_memory(device)
            prev = memory.get(name, {})
            memory[name] = {k: max(v, prev.get(k, 0.0)) for k, v in peak.items()}


def _to_cpu(scales):
    return type(scales)(**{k: (None if v is None else v.cpu()) for k, v in vars(scales).items()})


def write_report(report: ActQuantReport, path: str | Path) -> Path:
    """Write quant_report.json atomically."""
    from omnimodel.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(report.to_json(), indent=1))
    return Path(path)


def actquant_factory(arg: str | None = None) -> Quantizer:
    """Entry point `actquant[:<bpw>[,key=value...]]`."""
    return ActQuant(ActQuantOptions.parse(arg))
