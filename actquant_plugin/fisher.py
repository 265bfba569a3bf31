"""Stage 2 statistics: the Action-Mixed Fisher diagonal (Eq. 7-9).

For each calibration sample n, L_n = lambda * L_act + (1 - lambda) * L_aux, one backward pass, and
F_i += (dL_n/dw_i)^2; F is divided by N. The two terms are the arch's (its quant_calibration hooks:
an L1 action head and an action-token cross-entropy, or a flow-matching loss with no auxiliary term). Gradients are squared into float32
accumulators by per-parameter hooks and dropped at once, so no gradient buffers pile up; when
the accumulators of all targets would exceed `max_bytes`, the targets are split into groups and
each group gets its own pass over the calibration set.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from actquant_plugin.calibration import progress

log = logging.getLogger(__name__)


def _hooks_of(model: nn.Module, hooks: Any) -> Any:
    """The calibration hooks to use: those given, else those of the arch owning the model's config."""
    if hooks is not None:
        return hooks
    from omnimodel.ggufio import names

    return names.arch_for(config=getattr(model, "cfg", None)).quant_calibration()


def sample_loss(model: nn.Module, calib: Any, idx: list[int], lam: float, device, dtype,
                l1_reduction: str = "mean", hooks: Any = None) -> torch.Tensor:  # fmt: skip
    """L_AMF of the frames `idx`: lambda L_act + (1 - lambda) L_aux, both terms from the arch's hooks."""
    act, aux = _hooks_of(model, hooks).loss(model, calib, idx, device, dtype, lam < 1.0, l1_reduction)
    if lam >= 1.0:
        return act
    return lam * act + (1.0 - lam) * aux


def split_groups(params: dict[str, nn.Parameter], max_bytes: float | None) -> list[list[str]]:
    """Consecutive groups of parameters whose float32 accumulators fit in `max_bytes` each."""
    if not max_bytes:
        return [list(params)]
    groups, cur, size = [], [], 0
    for name, p in params.items():
        b = 4 * p.numel()
        if cur and size + b > max_bytes:
            groups.append(cur)
            cur, size = [], 0
        cur.append(name)
        size += b
    if cur:
        groups.append(cur)
    return groups


def _squared_grad_pass(model: nn.Module, calib: Any, params: dict[str, nn.Parameter], lam: float,
                       device, dtype, batch: int, l1_reduction: str, acc: dict[str, torch.Tensor], on_grad,
                       label: str, hooks: Any = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """One backward pass of L_AMF per batch of frames; `on_grad(name, param)` adds each parameter's
    gradient statistic into `acc` as soon as the gradient is accumulated, and the gradient is dropped
    at once. Returns `acc` divided by the batch count (the mean over the calibration set)."""
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    handles = []
    count = 0
    hooks = _hooks_of(model, hooks)
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for n, p in params.items():
            p.requires_grad_(True)

            def hook(param, n=n):
                on_grad(n, param)
                param.grad = None

            handles.append(p.register_post_accumulate_grad_hook(hook))
        with progress(label, len(calib)) as bar:
            for idx in hooks.batches(calib, batch):
                loss = sample_loss(model, calib, idx, lam, device, dtype, l1_reduction, hooks)
                loss.backward()
                count += 1
                bar.advance(len(idx))
    finally:
        for h in handles:
            h.remove()
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
            p.grad = None
    for a in acc.values():
        a.div_(max(count, 1))
    return acc


def fisher_diagonal(
    model: nn.Module,
    calib: Any,
    params: dict[str, nn.Parameter],
    lam: float,
    device: torch.device,
    dtype: torch.dtype,
    batch: int = 1,
    l1_reduction: str = "mean",
    hooks: Any = None,
) -> dict[str, torch.Tensor]:
    """Mean squared gradient of L_AMF for each parameter in `params` (one pass over the calibration set)."""
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}

    def add(n, param):
        acc[n].add_(param.grad.float().square())

    return _squared_grad_pass(model, calib, params, lam, device, dtype, batch, l1_reduction, acc, add, "actquant: fisher", hooks)


def fisher_energy(
    model: nn.Module,
    calib: Any,
    params: dict[str, nn.Parameter],
    lam: float,
    device: torch.device,
    dtype: torch.dtype,
    batch: int = 1,
    l1_reduction: str = "mean",
    hooks: Any = None,
) -> dict[str, torch.Tensor]:
    """Per output row r of each parameter, sum_j F_rj w_rj^2 (F the mean squared gradient of L_AMF).

    The first-order estimate of the loss increase when the row is perturbed by a relative error,
    so a matrix's total is a Fisher sensitivity comparable across matrices. Only one float per row
    is kept: one pass, no per-element accumulators, whatever the model size.
    """
    acc = {n: torch.zeros(p.shape[0], dtype=torch.float32, device=p.device) for n, p in params.items()}

    def add(n, param):  # one tensor-sized temporary at a time
        g2w2 = param.grad.float().square_().mul_(param.detach().float().square())
        acc[n].add_(g2w2.reshape(param.shape[0], -1).sum(1))

    return _squared_grad_pass(model, calib, params, lam, device, dtype, batch, l1_reduction, acc, add, "actquant: fisher energy", hooks)
