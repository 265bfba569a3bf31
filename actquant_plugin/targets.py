"""Which PyTorch module realises which GGUF matrix, and how a per-element statistic of the PyTorch
weight (Fisher) is laid out like the GGUF tensor (row slice of the fused qkv, q/k RoPE permutation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from omnimodel.errors import QuantError
from omnimodel.ggufio import names


@dataclass
class Target:
    """One GGUF matrix: its name, the nn.Linear that computes it, the output rows it owns, the layout."""

    name: str
    module_name: str
    module: nn.Linear
    rows: slice
    layout: str  # "identity" | "permute_rope:<heads>" | "transpose"
    component: str  # the arch's component of the GGUF name ("vision", "llm", ...)
    tower: str  # the tower label (the arch hooks' tower_inputs key) whose input X this matrix is compared with

    def to_gguf(self, t: torch.Tensor) -> torch.Tensor:
        """A PyTorch-layout [out, in] statistic of the whole module weight -> the GGUF tensor's layout."""
        from omnimodel.ggufio.convert import permute_rope

        t = t[self.rows]
        if self.layout == "identity":
            return t
        if self.layout == "transpose":
            return t.t().contiguous()
        return permute_rope(t, int(self.layout.split(":")[1]))


def _layouts(name: str, cfg, arch=None) -> list[str]:
    arch = names.arch_for(arch, config=cfg)
    out = ["identity"]
    if "permute_rope" in arch.default_transforms(cfg).get(name, []):
        out = [f"permute_rope:{arch.rope_heads(name, cfg)}", "identity"]
    return [*out, "transpose"]


def find_targets(model: nn.Module, tensors: Mapping[str, torch.Tensor], cfg, check: bool = True,
                 tower_of: Callable[[str, str], str] | None = None) -> dict[str, Target]:  # fmt: skip
    """Targets for every GGUF matrix in `tensors` computed by an nn.Linear of `model` (embedding and LM head excluded).

    `tower_of(gguf_name, component)` labels the tower whose X a matrix is compared with (the arch's
    calibration hooks; default: a vision tensor's prefix, else "llm"). With `check`, the layout is the one under which the module's weight equals the tensor handed
    to the quantizer (so reflector overrides of the transforms are followed); a mismatch raises.
    """
    arch = names.arch_for(config=cfg)
    out: dict[str, Target] = {}
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        key = f"{mod_name}.weight"
        try:
            gnames = arch.gguf_names(key)
        except KeyError:
            continue
        if not gnames:
            continue
        n = mod.weight.shape[0] // len(gnames)
        for k, g in enumerate(gnames):
            if g not in tensors or g == "output.weight":
                continue
            comp = arch.component_of(g)
            tower = tower_of(g, comp) if tower_of else g.split(".", 1)[0] if comp == "vision" else "llm"
            rows = slice(k * n, (k + 1) * n)
            layouts = _layouts(g, cfg, arch)
            chosen = layouts[0]
            if check:
                want = tensors[g]
                w = mod.weight.detach().to(want.device, torch.float32)
                chosen = None
                for lay in layouts:
                    t = Target(g, mod_name, mod, rows, lay, comp, tower).to_gguf(w)
                    if t.shape == want.shape and torch.allclose(t, want.to(torch.float32), rtol=1e-2, atol=1e-3):
                        chosen = lay
                        break
                if chosen is None:
                    raise QuantError(f"{g}: the model's {key} matches the tensor to quantize under no known layout")
            out[g] = Target(g, mod_name, mod, rows, chosen, comp, tower)
    return out
