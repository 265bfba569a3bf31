"""Pieces every arch's behaviour-cloning recipe shares: device choice, the learning-rate schedule,
AdamW's parameter groups, the weight EMA and the run's result. The recipes (loss, batching,
checkpoint) stay in each arch's train.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omnimodel.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda when available; 'cpu' / 'cuda' as asked (cuda must exist); cuda as cuda:<current>."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: choose cpu, cuda or auto")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no CUDA device; use --device cpu")
    if name == "cuda":  # indexed, so that comparisons with tensor.device hold
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def lr_at(step: int, cfg: Any) -> float:
    """Linear warm-up over cfg.warmup steps, then cosine from cfg.lr down to cfg.min_lr_ratio * cfg.lr at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def adamw(
    model: torch.nn.Module, cfg: Any, device: torch.device, no_decay_words: tuple[str, ...]
) -> torch.optim.AdamW:
    """AdamW (betas 0.9 / 0.95) with cfg.weight_decay on matrices; none on vectors and names holding a word given."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or any(w in name for w in no_decay_words) else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )


class Ema:
    """An exponential moving average of the weights (decay warmed up as min(decay, (1 + step) / (10 + step)))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.shadow = [p.detach().clone() for p in model.parameters()] if decay > 0 else None

    def update(self, step: int) -> None:
        if self.shadow is None:
            return
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.model.parameters()], 1 - d)

    def copy_to_model(self) -> None:
        """Replace the model's weights with the average (no-op without one)."""
        if self.shadow is None:
            return
        with torch.no_grad():
            for p, e in zip(self.model.parameters(), self.shadow, strict=True):
                p.copy_(e)


@dataclass
class TrainResult:
    """What a run produced."""

    out_dir: Path
    log: list[dict]
    frames: int
    episodes: int
    seconds: float
    eval: dict | None = None
