"""Pieces every arch's behaviour-cloning recipe shares: device choice, the learning-rate schedule,
AdamW's parameter groups, the weight EMA and the run's result. The recipes (loss, batching,
checkpoint) stay in each arch's train.py."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from omnimodel.errors import ConfigError

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


@dataclass
class BCConfig:
    """The knobs every recipe has (an arch's TrainConfig adds its own and may change the defaults)."""

    steps: int = 15000
    batch: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 300
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema: float = 0.999
    episodes_per_task: int = 32
    dart_fraction: float = 0.5  # share of episodes with perturbed execution
    dart_block_prob: float = 0.35  # chance that a chunk-long block of a DART episode is perturbed
    dart_sigma: float = 0.35  # per-step noise (action units) in a perturbed block
    dart_bias: float = 0.25  # per-block constant offset (action units)
    augment: bool = True
    hue: float = 0.02
    seed: int = 0
    device: str = "auto"
    preset: str = ""
    suites: tuple[str, ...] = SUITES
    workers: int = 0  # data-generation processes (0: one per CPU core)
    log_every: int = 50
    demos: str | None = None  # LIBERO-style HDF5 folder instead of on-the-fly expert data
    eval_episodes: int = 0
    time_budget: float = 0.0  # seconds of optimisation; >0 shortens the schedule after a timing probe
    init: str | None = None  # start from this checkpoint's weights instead of a random init
    extra: dict = field(default_factory=dict)


def demo_spec(cfg: BCConfig, chunk: int):
    """The expert-data recipe of a training config (omnimodel.suite.demos), labelled with `chunk`-step plans."""
    from omnimodel.suite.demos import DemoSpec

    return DemoSpec(tuple(cfg.suites), cfg.episodes_per_task, chunk, cfg.seed, cfg.dart_fraction,
                    cfg.dart_block_prob, cfg.dart_sigma, cfg.dart_bias, cfg.workers)  # fmt: skip


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


def record_sections(cfg: Any, summary: dict, command: str | None, fallback: str) -> list[str]:
    """TRAINING.md's Command, Configuration and Run sections (`fallback` names the call when no command line)."""
    return [
        "## Command", "", "```", command or fallback, "```", "",
        "## Configuration", "", "```json", json.dumps({k: v for k, v in asdict(cfg).items() if k != "extra"}, indent=2), "```", "",
        "## Run", "", "```json", json.dumps(summary, indent=2), "```", "",
    ]  # fmt: skip


def eval_section(ev: dict | None) -> list[str]:
    """TRAINING.md's closed-loop table of a PyTorch eval of the written checkpoint (nothing without one)."""
    if ev is None:
        return []
    lines = ["## Closed-loop eval (PyTorch, this checkpoint)", "", f"{ev['episodes']} episodes, seed {ev['seed']}.", "",
             "| suite | success |", "|---|---:|"]  # fmt: skip
    lines += [f"| {s} | {100 * v:.1f}% |" for s, v in ev["success_per_suite"].items()]
    return lines + [f"| mean | {100 * ev['success_mean']:.1f}% |", ""]
