"""Baselines under the same plugin interface: llama.cpp-style mixes (q4_k_m, q3_k_m, q2_k) and an
imatrix-style quantizer (per-column mean squared activation as importance).

The mixes follow the rules of llama-quantize (llama.cpp src/llama-quant.cpp, read, not copied):
base type per recipe; the output matrix goes to Q6_K; attn_v, ffn_down and attn_output are
bumped as the recipe says (Q4_K_M: Q6_K on the "more bits" layers, i < n/8 or i >= 7n/8 or
(i - n/8) % 3 == 2; Q3_K_M: attn_v Q5_K in the first two layers else Q4_K, ffn_down Q5_K in the
first n/16 layers else Q4_K, attn_output Q4_K; Q2_K: attn_v Q3_K (Q4_K with GQA >= 4), ffn_down and
attn_output Q3_K). The vision towers get the same rules, counting layers per tower.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch

from omnimodel.errors import QuantError
from omnimodel.quant.formats import fitting_type
from omnimodel.quant.plugin import QuantContext, Quantizer, TensorPlan

log = logging.getLogger(__name__)
RECIPES = {"q4_k_m": "Q4_K", "q3_k_m": "Q3_K", "q2_k": "Q2_K"}
_LAYER = re.compile(
    r"^((?:[a-z][a-z0-9_]*\.)?blk)\.(\d+)\.(.+)$"
)  # blk.N, and a stack prefix: v.blk.N, aex.blk.N


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _bump(recipe: str, kind: str, i: int, n: int, n_gqa: int) -> str | None:
    if recipe == "q4_k_m":
        if kind in ("attn_v", "ffn_down") and _more_bits(i, n):
            return "Q6_K"
    elif recipe == "q3_k_m":
        if kind == "attn_v":
            return "Q5_K" if i < 2 else "Q4_K"
        if kind == "ffn_down":
            return "Q5_K" if i < n // 16 else "Q4_K"
        if kind == "attn_output":
            return "Q4_K"
    elif recipe == "q2_k":
        if kind == "attn_v":
            return "Q4_K" if n_gqa >= 4 else "Q3_K"
        if kind in ("ffn_down", "attn_output"):
            return "Q3_K"
    return None


def mix_types(recipe: str, shapes: Mapping[str, tuple[int, ...]], n_gqa: int = 1) -> dict[str, str]:
    """The type of every matrix under a llama.cpp-style recipe (types that do not fit a row fall back)."""
    recipe = recipe.lower()
    if recipe not in RECIPES:
        raise QuantError(f"unknown mix {recipe!r}; choose one of {', '.join(RECIPES)}")
    base = RECIPES[recipe]
    layers: dict[str, int] = {}
    for name in shapes:
        m = _LAYER.match(name)
        if m:
            layers[m.group(1)] = max(layers.get(m.group(1), 0), int(m.group(2)) + 1)
    out = {}
    for name, shape in shapes.items():
        t = base
        m = _LAYER.match(name)
        if name == "output.weight":
            t = "Q6_K"
        elif m:
            kind = m.group(3).rsplit(".", 1)[0]
            t = _bump(recipe, kind, int(m.group(2)), layers[m.group(1)], n_gqa) or base
        out[name] = fitting_type(t, int(shape[-1]))
    return out


class MixQuantizer(Quantizer):
    """A llama.cpp-style mix: per-tensor types by rule, plain (unweighted) encoders."""

    def __init__(self, recipe: str):
        self.recipe = recipe.lower()
        if self.recipe not in RECIPES:
            raise QuantError(f"unknown mix {recipe!r}; choose one of {', '.join(RECIPES)}")
        self.name = self.recipe

    def plan(self, tensors: Mapping[str, torch.Tensor], ctx: QuantContext) -> dict[str, TensorPlan]:
        """Types by the recipe's rules; no importance."""
        gqa = 1
        if ctx.config is not None:
            from omnimodel.ggufio.names import arch_for

            gqa = arch_for(config=ctx.config).query_groups(ctx.config)
        types = mix_types(self.recipe, {n: tuple(w.shape) for n, w in tensors.items()}, gqa)
        return {n: TensorPlan(t) for n, t in types.items()}


@torch.no_grad()
def column_sq_means(model, calib, targets, device, dtype, hooks=None) -> dict[str, torch.Tensor]:
    """Per input column, the mean over calibration tokens of the squared activation entering each target matrix
    (the forward is the arch's calibration hook's)."""
    if hooks is None:
        from omnimodel.ggufio import names

        hooks = names.arch_for(config=model.cfg).quant_calibration()
    sums: dict[str, list] = {}
    handles = []
    for mod_name, mod in model.named_modules():
        if not any(t.module_name == mod_name for t in targets.values()):
            continue

        def hook(_m, args, mod_name=mod_name):
            x = args[0].detach().float()
            x = x.reshape(-1, x.shape[-1])
            if mod_name in sums:
                sums[mod_name][0] += (x * x).sum(0)
                sums[mod_name][1] += x.shape[0]
            else:
                sums[mod_name] = [(x * x).sum(0), x.shape[0]]

        handles.append(mod.register_forward_pre_hook(hook))
    try:
        for i in range(len(calib)):
            hooks.action_output(model, calib, i, device, dtype)
    finally:
        for h in handles:
            h.remove()
    return {mn: (s / n).cpu() for mn, (s, n) in sums.items()}


class ImatrixQuantizer(Quantizer):
    """llama.cpp-style imatrix: importance[r, c] = mean sq. activation of column c x sqrt(sigma_r^2 + w^2)."""

    def __init__(self, arg: str | None):
        spec = (arg or "q4_k_m").lower()
        self.types_from = spec
        self.name = f"imatrix:{spec}"

    def plan(self, tensors: Mapping[str, torch.Tensor], ctx: QuantContext) -> dict[str, TensorPlan]:
        """The recipe's (or the single type's) types with column-importance weights from calibration."""
        from actquant_plugin.calibration import resolve
        from actquant_plugin.plugin import _device
        from actquant_plugin.targets import find_targets

        if ctx.model is None:
            raise QuantError("imatrix needs the PyTorch model and --calib DIR")
        model = ctx.model
        device = _device(ctx.extra.get("device"))
        dtype = next(model.parameters()).dtype
        model.to(device).eval()
        calib = resolve(ctx.calibration, model.cfg, ctx.extra.get("calib_frames"), 0, ctx.extra.get("stats"),
                        ctx.extra.get("tokenizer"))  # fmt: skip
        shapes = {n: tuple(w.shape) for n, w in tensors.items()}
        if self.types_from in RECIPES:
            types = mix_types(self.types_from, shapes)
        else:
            types = {n: fitting_type(self.types_from.upper(), s[-1]) for n, s in shapes.items()}
        targets = find_targets(model, tensors, model.cfg)
        cols = column_sq_means(model, calib, targets, device, dtype)
        plans = {}
        for name, w in tensors.items():
            t = targets.get(name)
            if t is None or t.module_name not in cols:
                plans[name] = TensorPlan(types[name])
                continue
            c = cols[t.module_name]
            if t.layout == "transpose":
                raise QuantError(f"{name}: imatrix for a transposed layout is not supported")
            w = w.to(torch.float32)
            sigma2 = (w * w).mean(1, keepdim=True)
            plans[name] = TensorPlan(types[name], importance=c[None, :] * torch.sqrt(sigma2 + w * w))
        return plans


def mix_factory(arg: str | None = None) -> Quantizer:
    """Entry point `mix:<recipe>` (q4_k_m, q3_k_m, q2_k)."""
    if not arg:
        raise QuantError("mix needs a recipe: mix:q4_k_m, mix:q3_k_m or mix:q2_k")
    return MixQuantizer(arg)


def q4_k_m_factory(arg: str | None = None) -> Quantizer:
    """Entry point `q4_k_m`."""
    return MixQuantizer("q4_k_m")


def q3_k_m_factory(arg: str | None = None) -> Quantizer:
    """Entry point `q3_k_m`."""
    return MixQuantizer("q3_k_m")


def q2_k_factory(arg: str | None = None) -> Quantizer:
    """Entry point `q2_k` (the llama.cpp Q2_K mix; `rtn:q2_k` is the uniform type)."""
    return MixQuantizer("q2_k")


def imatrix_factory(arg: str | None = None) -> Quantizer:
    """Entry point `imatrix[:<recipe or type>]` (default q4_k_m)."""
    return ImatrixQuantizer(arg)
