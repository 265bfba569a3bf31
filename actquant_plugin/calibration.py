"""Calibration samples in the form the policy consumes: images, normalised proprio, prompt ids and
normalised ground-truth action chunks; built from demonstrations (the paper's selection rule) or
at random for the 7B speed benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnimodel.errors import CalibError

log = logging.getLogger(__name__)


@dataclass
class CalibrationSet:
    """N calibration frames: images (N, n_img, 224, 224, 3) uint8, proprio (N, P) and actions (N, chunk, dim) normalised."""

    images: np.ndarray
    proprio: np.ndarray
    prompts: list[list[int]]
    actions: np.ndarray
    source: str = ""
    pixels: torch.Tensor | None = None  # optional precomputed pixel values (random sets)
    suites: list[str] | None = None  # each frame's suite (demonstration sets)

    def __len__(self) -> int:
        return len(self.actions)

    def inputs(
        self, i: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixel_values (1, 6 n_img, 224, 224), input_ids (1, T), proprio (1, P)) of frame i."""
        from omnimodel.models.preprocess import pixel_values

        if self.pixels is not None:
            px = self.pixels[i : i + 1]
        else:
            px = torch.from_numpy(pixel_values(list(self.images[i])))
        ids = torch.tensor([self.prompts[i]], dtype=torch.long)
        prop = torch.from_numpy(np.asarray(self.proprio[i : i + 1], np.float32))
        return px.to(device, dtype), ids.to(device), prop.to(device, dtype)


# Default cap on calibration frames (--calib-frames overrides; 0 or a negative number: every frame).
# 256 frames is what the open-loop benchmark calibrates with (benchmarks/actquant_openloop.py). On the
# shipped tiny-suite policy at actquant:3.0 the HSIC sensitivities at 256 frames rank the matrices as
# at 1024 (Spearman 0.998; 64 frames: 0.983, 32: 0.950) and 86.5% of the types match 1024's; every
# extra frame costs one more forward (HSIC) and forward+backward (Fisher) pass, and an export holds thousands.
DEFAULT_FRAMES = 256


def frame_cap(frames: int | None) -> int | None:
    """The number of calibration frames to use: the default cap when unset, every frame when <= 0."""
    if frames is None:
        return DEFAULT_FRAMES
    return None if frames <= 0 else frames


def from_demos(
    root: str | Path,
    stats: dict | None = None,
    tokenizer: Any = None,
    text_vocab: int = 32000,
    frames: int | None = None,
    seed: int = 0,
    select: bool = True,
    prompt: Callable[[Any, str], list[int]] | None = None,
) -> CalibrationSet:
    """The paper's calibration set from LIBERO-style demonstrations under `root`.

    `stats` are the checkpoint's action/proprio statistics (one dataset's dict); without them the
    calibration episodes' own statistics are used. `frames` subsamples (--calib-frames). `prompt`
    (tokenizer, instruction) -> ids is the policy's prompt, which its arch supplies (an arch's
    `quant_calibration().calibration_set` calls this with it).
    """
    if prompt is None:
        raise CalibError("from_demos needs the policy's prompt builder; use the arch's quant_calibration().calibration_set")
    build_prompt_ids = prompt
    from omnimodel.calib import (
        FrameDataset,
        dataset_statistics,
        read_demos,
        select_calibration,
        subsample_frames,
    )
    from omnimodel.models.preprocess import normalize_actions, normalize_proprio
    from omnimodel.models.tokenizer import build_char_tokenizer

    episodes = read_demos(root)
    chosen = select_calibration(episodes, seed) if select else episodes
    pairs = subsample_frames(chosen, frames, seed)
    if not pairs:
        raise CalibError(f"no calibration frames under {root}")
    stats = stats or dataset_statistics(chosen)
    tok = tokenizer or build_char_tokenizer(text_vocab)
    ds = FrameDataset(chosen, pairs)
    try:
        samples = [ds[k] for k in range(len(ds))]
    finally:
        ds.close()
    prompt_cache: dict[str, list[int]] = {}
    prompts = [prompt_cache.setdefault(s.instruction, build_prompt_ids(tok, s.instruction)) for s in samples]
    log.info("calibration: %d frames from %d of %d episodes", len(samples), len(chosen), len(episodes))
    return CalibrationSet(
        images=np.stack([np.stack(s.images) for s in samples]),
        proprio=np.stack([normalize_proprio(s.proprio, stats) for s in samples]),
        prompts=prompts,
        actions=np.stack([normalize_actions(s.actions, stats) for s in samples]).astype(np.float32),
        source=str(root),
        suites=[chosen[e].suite for e, _ in pairs],
    )


def random_set(cfg: Any, n: int, seed: int = 0, prompt_len: int = 24) -> CalibrationSet:
    """Random frames, prompts and actions in the model's shapes (speed and memory benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    pixels = torch.randn(n, 6 * cfg.num_images, cfg.dino.image, cfg.dino.image, generator=g)
    prompts = [[1] + rng.integers(3, cfg.text_vocab, prompt_len - 1).tolist() for _ in range(n)]
    return CalibrationSet(
        images=np.zeros((n, 0), np.uint8),
        proprio=rng.uniform(-1, 1, (n, cfg.proprio_dim)).astype(np.float32),
        prompts=prompts,
        actions=rng.uniform(-1, 1, (n, cfg.chunk, cfg.action_dim)).astype(np.float32),
        source="random",
        pixels=pixels,
    )


def resolve(calibration: Any, cfg: Any, frames: int | None = None, seed: int = 0, stats: dict | None = None,
            tokenizer: Any = None, hooks: Any = None) -> Any:  # fmt: skip
    """A calibration set from what the converter was given: a set, a demonstrations path, or None (error),
    through the arch's calibration hooks (`hooks`, default: those of the arch owning `cfg`)."""
    if hooks is None:
        from omnimodel.ggufio import names

        hooks = names.arch_for(config=cfg).quant_calibration()
    return hooks.resolve(calibration, cfg, frames, seed, {"stats": stats, "tokenizer": tokenizer})


def subset(cs: CalibrationSet, idx: np.ndarray) -> CalibrationSet:
    """The frames `idx` of a calibration set."""
    return CalibrationSet(
        images=cs.images[idx] if len(cs.images) else cs.images,
        proprio=cs.proprio[idx],
        prompts=[cs.prompts[i] for i in idx],
        actions=cs.actions[idx],
        source=cs.source,
        pixels=None if cs.pixels is None else cs.pixels[torch.from_numpy(np.asarray(idx))],
        suites=None if cs.suites is None else [cs.suites[i] for i in idx],
    )


def progress(description: str, total: int):
    """A rich progress bar (transient), or a silent stand-in where rich is not installed (GPU box)."""
    try:
        from rich.progress import Progress
    except ImportError:  # pragma: no cover - minimal environments
        return _Silent()
    return _RichTask(Progress(transient=True), description, total)


class _Silent:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, n: int = 1) -> None:
        """No-op."""


class _RichTask(_Silent):
    def __init__(self, bar, description: str, total: int):
        self.bar, self.description, self.total = bar, description, total

    def __enter__(self):
        self.bar.__enter__()
        self.task = self.bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def advance(self, n: int = 1) -> None:
        """Advance the bar by n."""
        self.bar.advance(self.task, n)
