"""Stage 1 statistics: per-sample mean-pooled outputs of every target matrix and the inputs X of
the LLM and of each vision tower, captured with forward hooks over the calibration set.

Each model forward adds one row per matrix: the output summed over all token positions (every
image for a tower) and divided by the count, i.e. pooled over ALL positions (the authors' driver's
--pool-all). Only N x width vectors are kept, never tokens x features. The forward, the towers'
input modules and the action output come from the arch's calibration hooks (quant_calibration).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from actquant_plugin.calibration import progress
from actquant_plugin.targets import Target

log = logging.getLogger(__name__)


class _Pool:
    """Running sums of one forward pass: name -> (sum over tokens [B, width], token count)."""

    def __init__(self) -> None:
        self.acc: dict[str, list] = {}

    def add(self, name: str, y: torch.Tensor) -> None:
        y = y.detach()
        s = y.reshape(y.shape[0], -1, y.shape[-1]).float().sum(1)
        n = y.numel() // (y.shape[0] * y.shape[-1])
        if name in self.acc:
            self.acc[name][0] += s
            self.acc[name][1] += n
        else:
            self.acc[name] = [s, n]

    def means(self) -> dict[str, torch.Tensor]:
        return {k: s / n for k, (s, n) in self.acc.items()}


def _first_blocks(model: nn.Module, hooks: Any) -> dict[str, nn.Module]:
    """The module whose first input is X, per tower label (the arch's hook paths)."""
    return {tower: model.get_submodule(path) for tower, path in hooks.tower_inputs().items()}


@torch.no_grad()
def pooled_states(
    model: nn.Module, calib: Any, targets: dict[str, Target], device: torch.device, dtype: torch.dtype,
    hooks: Any = None, outputs: list | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(X per tower label (N, width), Y per target (N, rows)) on the CPU, float32.

    With `outputs` (a list), each frame's action output (1, D) of the same forward is appended to it.
    """
    if hooks is None:
        from omnimodel.ggufio import names

        hooks = names.arch_for(config=getattr(model, "cfg", None)).quant_calibration()
    pool = _Pool()
    by_module: dict[str, list[Target]] = {}
    for t in targets.values():
        by_module.setdefault(t.module_name, []).append(t)
    handles = []
    modules = dict(model.named_modules())
    for mod_name, ts in by_module.items():

        def hook(_m, _inp, out, ts=ts):
            for t in ts:
                pool.add(t.name, out[..., t.rows])

        handles.append(modules[mod_name].register_forward_hook(hook))
    for tower, blk in _first_blocks(model, hooks).items():

        def pre(_m, args, kwargs, tower=tower):
            x = args[0] if args else kwargs["hidden_states"]
            pool.add(f"X:{tower}", x)

        handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
    xs: dict[str, list[torch.Tensor]] = {}
    ys: dict[str, list[torch.Tensor]] = {n: [] for n in targets}
    try:
        with progress("actquant: hidden states", len(calib)) as bar:
            for i in range(len(calib)):
                pool.acc.clear()
                out = hooks.action_output(model, calib, i, device, dtype)
                if outputs is not None:
                    outputs.append(out.detach().float().cpu())
                for k, v in pool.means().items():
                    if k.startswith("X:"):
                        xs.setdefault(k[2:], []).append(v.cpu())
                    else:
                        ys[k].append(v.cpu())
                bar.advance()
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in xs.items()}, {k: torch.cat(v) for k, v in ys.items() if v}
