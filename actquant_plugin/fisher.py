"""Stage 2 statistics: the Action-Mixed Fisher diagonal (Eq. 7-9).

For each calibration sample n, L_n = lambda * L1(actions) + (1 - lambda) * CE(action tokens), one
backward pass, and F_i += (dL_n/dw_i)^2; F is divided by N. Gradients are squared into float32
accumulators by per-parameter hooks and dropped at once, so no gradient buffers pile up; when
the accumulators of all targets would exceed `max_bytes`, the targets are split into groups and
each group gets its own pass over the calibration set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from actquant_plugin.calibration import CalibrationSet, progress

log = logging.getLogger(__name__)


def action_tokens(norm_actions: np.ndarray, text_vocab: int) -> np.ndarray:
    """The discrete pathway's target ids (train.py's rule: text_vocab - digitize(a, 256 bins))."""
    from omnimodel.train import action_tokens as tokens

    return tokens(norm_actions, text_vocab)


def sample_loss(model: nn.Module, calib: CalibrationSet, idx: list[int], lam: float, device, dtype,
                l1_reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """L_AMF of the frames `idx` (same prompt length): lambda L1 + (1 - lambda) CE at the action positions."""
    parts = [calib.inputs(i, device, dtype) for i in idx]
    px = torch.cat([p[0] for p in parts])
    ids = torch.cat([p[1] for p in parts])
    prop = torch.cat([p[2] for p in parts])
    target = torch.from_numpy(calib.actions[idx]).to(device)
    out = model(px, ids, prop, with_logits=lam < 1.0)
    diff = (out.actions.float() - target).abs()
    l1 = diff.mean() if l1_reduction == "mean" else diff.reshape(len(idx), -1).sum(-1).mean()
    if lam >= 1.0:
        return l1
    tok = torch.from_numpy(action_tokens(calib.actions[idx], model.cfg.text_vocab)).to(device)
    logits = out.action_logits.float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1))
    return lam * l1 + (1.0 - lam) * ce


def _batches(calib: CalibrationSet, batch: int) -> Iterator[list[int]]:
    """Frames in order, grouped `batch` at a time among frames with the same prompt length."""
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(calib.prompts):
        by_len.setdefault(len(p), []).append(i)
    for idx in by_len.values():
        for s in range(0, len(idx), batch):
            yield idx[s : s + batch]


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


def _squared_grad_pass(model: nn.Module, calib: CalibrationSet, params: dict[str, nn.Parameter], lam: float,
                       device, dtype, batch: int, l1_reduction: str, acc: dict[str, torch.Tensor], on_grad,
                       label: str) -> dict[str, torch.Tensor]:  # fmt: skip
    """One backward pass of L_AMF per batch of frames; `on_grad(name, param)` adds each parameter's
    gradient statistic into `acc` as soon as the gradient is accumulated, and the gradient is dropped
    at once. Returns `acc` divided by the batch count (the mean over the calibration set)."""
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    handles = []
    count = 0
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
            for idx in _batches(calib, batch):
                loss = sample_loss(model, calib, idx, lam, device, dtype, l1_reduction)
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
    calib: CalibrationSet,
    params: dict[str, nn.Parameter],
    lam: float,
    device: torch.device,
    dtype: torch.dtype,
    batch: int = 1,
    l1_reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """Mean squared gradient of L_AMF for each parameter in `params` (one pass over the calibration set)."""
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}

    def add(n, param):
        acc[n].add_(param.grad.float().square())

    return _squared_grad_pass(model, calib, params, lam, device, dtype, batch, l1_reduction, acc, add, "actquant: fisher")


def fisher_energy(
    model: nn.Module,
    calib: CalibrationSet,
    params: dict[str, nn.Parameter],
    lam: float,
    device: torch.device,
    dtype: torch.dtype,
    batch: int = 1,
    l1_reduction: str = "mean",
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

    return _squared_grad_pass(model, calib, params, lam, device, dtype, batch, l1_reduction, acc, add, "actquant: fisher energy")
