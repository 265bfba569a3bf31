"""π0 / π0.5 ActQuant calibration hooks: the flow-matching loss as the action term, HSIC against the
action chunk the predicted velocity points to, fixed noise and time per calibration frame.

Flow matching (openpi `compute_loss`, LeRobot `PI0Pytorch.forward`): x_t = t ε + (1 − t) a,
u = ε − a, t ~ Beta(1.5, 1) · 0.999 + 0.001, loss = MSE(v(x_t, t), u) over the robot's action dims
(LeRobot truncates to the original action dim). There is no action-token head, so the
Action-Mixed Fisher has no auxiliary term (λ = 1). ε and t of frame i are drawn once, from
`default_rng([seed, i])`, so two runs give the same Fisher and the same GGUF byte for byte.

HSIC's A_n is the one-step estimate of the clean chunk, â = x_t − t v(x_t, t) over the robot's
dims, from the same forward that the hidden-state hooks see: the velocity itself is mostly the
sample's noise ε, which the prefix never sees.

Calibration frames come from LIBERO-style demonstrations (omnimodel.calib), prepared as the
checkpoint's own policy prepares a control step (`TorchPolicy.prepare`: cameras, the state in the
prompt for π0.5 or as a token for π0, the prompt format of the checkpoint's origin), with action
chunks in the dataset's LIBERO convention normalised by the checkpoint's statistics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnimodel.archs.quant_calibration import QuantCalibration
from omnimodel.errors import CalibError

log = logging.getLogger(__name__)

BETA = (
    1.5,
    1.0,
)  # t ~ Beta(1.5, 1) * T_SCALE + T_MIN (openpi; LeRobot's config.json time_sampling_* defaults)
T_SCALE, T_MIN = 0.999, 0.001
_TIME_KEYS = (
    "time_sampling_beta_alpha",
    "time_sampling_beta_beta",
    "time_sampling_scale",
    "time_sampling_offset",
)
_PG = "paligemma_with_expert.paligemma.model"
_EXPERT = "paligemma_with_expert.gemma_expert.model"


def flow_noise(seed: int, index: int, chunk: int, action_dim: int,
               time_sampling: tuple[float, float, float, float] = (*BETA, T_SCALE, T_MIN)) -> tuple[np.ndarray, np.float32]:  # fmt: skip
    """(ε (chunk, action_dim) float32, t float32) of calibration frame `index`: fixed per (seed, index).

    `time_sampling` = (alpha, beta, scale, offset): t = Beta(alpha, beta) * scale + offset."""
    alpha, beta, scale, offset = time_sampling
    rng = np.random.default_rng([seed, index])
    eps = rng.standard_normal((chunk, action_dim)).astype(np.float32)
    t = np.float32(rng.beta(alpha, beta) * scale + offset)
    return eps, t


def flow_loss(
    v: torch.Tensor, eps: torch.Tensor, actions: torch.Tensor, robot_dim: int, reduction: str = "mean"
) -> torch.Tensor:
    """MSE(v, ε − a) over the first `robot_dim` action dims: "mean" over every entry, or "sum" per frame then the mean."""
    err = (v.float() - (eps - actions).float())[..., :robot_dim].square()
    return err.mean() if reduction == "mean" else err.reshape(err.shape[0], -1).sum(-1).mean()


@dataclass
class FlowCalibrationSet:
    """N frames: raw observations (prepared per use), normalised padded chunks, and each frame's fixed ε and t."""

    images: list[list[np.ndarray]]  # per frame, the real cameras (HWC uint8) in slot order
    states: np.ndarray  # (N, robot state dims) raw
    instructions: list[str]
    actions: np.ndarray  # (N, chunk, action_dim) normalised, zero beyond the robot's dims
    noise: np.ndarray  # (N, chunk, action_dim) float32
    time: np.ndarray  # (N,) float32
    robot_dim: int  # the robot's action dims (the loss and HSIC read only these)
    policy: Any  # prepares a control step: a TorchPolicy (its tokenizer, statistics and transforms)
    source: str = ""
    suites: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)

    def inputs(self, idx: list[int], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """joint_velocity's observation arguments for frames `idx`, batched."""
        parts = [self.policy.prepare(self.images[i], self.states[i], self.instructions[i]) for i in idx]
        cams = range(len(parts[0].images))
        state = None if parts[0].state is None else torch.cat([p.state for p in parts]).to(device, dtype)
        return {
            "images": [torch.cat([p.images[c] for p in parts]).to(device, dtype) for c in cams],
            "image_masks": [torch.cat([p.image_masks[c] for p in parts]).to(device) for c in cams],
            "tokens": torch.cat([p.tokens for p in parts]).to(device),
            "token_mask": torch.cat([p.token_mask for p in parts]).to(device),
            "state": state,
        }

    def flow(self, idx: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, ε, t) of frames `idx` as float32 tensors."""
        a = torch.from_numpy(self.actions[idx]).to(device)
        eps = torch.from_numpy(self.noise[idx]).to(device)
        return a, eps, torch.from_numpy(self.time[idx]).to(device)


class _ConfigOnly:
    """Stands in for the model where TorchPolicy.prepare only reads `model.cfg`."""

    def __init__(self, cfg: Any):
        self.cfg = cfg


class FlowCalibration(QuantCalibration):
    """π0 / π0.5: L_act = flow-matching MSE at each frame's fixed (ε, t); no auxiliary term; HSIC against â."""

    hsic_target = "output"
    loss_name = "flow matching: MSE(v(x_t, t), eps - a) over the robot's action dims; no action-token head"

    def calibration_set(
        self, root, cfg, ckpt=None, stats=None, frames=None, seed=0, tokenizer=None
    ) -> FlowCalibrationSet:
        from omnimodel.archs.pi0 import checkpoint as ck
        from omnimodel.archs.pi0.policy import TorchPolicy, normalize, read_policy_spec, read_tokenizer
        from omnimodel.calib import (
            FrameDataset,
            action_chunks,
            read_demos,
            select_calibration,
            subsample_frames,
        )

        if ckpt is None:
            raise CalibError(
                f"{self.arch.name} calibration needs the checkpoint directory (its tokenizer, statistics and "
                f"prompt format); write one with `omnimodel zoo make {self.arch.bundled_preset} DIR`"
            )
        ckpt = Path(ckpt)
        raw_cfg = ck.read_raw_config(ckpt)
        sampling = tuple(
            float(raw_cfg.get(k, d)) for k, d in zip(_TIME_KEYS, (*BETA, T_SCALE, T_MIN), strict=True)
        )
        ck_stats = ck.read_stats(ckpt)
        spec = read_policy_spec(ckpt, cfg, ck_stats)
        tok = tokenizer if tokenizer is not None else read_tokenizer(ckpt)
        policy = TorchPolicy(_ConfigOnly(cfg), tok, ck_stats, spec)
        episodes = read_demos(root)
        chosen = select_calibration(episodes, seed)
        pairs = subsample_frames(chosen, frames, seed)
        if not pairs:
            raise CalibError(f"no calibration frames under {root}")
        ds = FrameDataset(chosen, pairs)
        try:
            samples = [ds[k] for k in range(len(ds))]
        finally:
            ds.close()
        chunks = [action_chunks(ep.actions, cfg.chunk) for ep in chosen]  # the dataset's (LIBERO) convention
        robot = spec.action_dim
        actions = np.zeros((len(pairs), cfg.chunk, cfg.action_dim), np.float32)
        noise = np.zeros_like(actions)
        times = np.zeros(len(pairs), np.float32)
        openpi = spec.origin == "openpi"
        for k, ((e, t), s) in enumerate(zip(pairs, samples, strict=True)):
            raw = chunks[e][t][:, :robot].astype(np.float64)
            if (
                spec.delta_mask is not None
            ):  # relative actions: the model predicts a - state on the masked dims
                dims = len(spec.delta_mask)
                raw[:, :dims] -= np.asarray(s.proprio, np.float64)[:dims] * np.asarray(
                    spec.delta_mask, np.float64
                )
            actions[k, :, :robot] = normalize(raw, ck_stats.action, spec.action_mode, spec.eps, openpi)
            noise[k], times[k] = flow_noise(seed, k, cfg.chunk, cfg.action_dim, sampling)
        log.info("calibration: %d frames from %d of %d episodes", len(pairs), len(chosen), len(episodes))
        return FlowCalibrationSet(
            images=[list(s.images) for s in samples],
            states=np.stack([np.asarray(s.proprio, np.float32) for s in samples]),
            instructions=[s.instruction for s in samples],
            actions=actions,
            noise=noise,
            time=times,
            robot_dim=robot,
            policy=policy,
            source=str(root),
            suites=[chosen[e].suite for e, _ in pairs],
        )

    def subset(self, calib: FlowCalibrationSet, idx: np.ndarray) -> FlowCalibrationSet:
        idx = np.asarray(idx)
        return FlowCalibrationSet(
            images=[calib.images[i] for i in idx],
            states=calib.states[idx],
            instructions=[calib.instructions[i] for i in idx],
            actions=calib.actions[idx],
            noise=calib.noise[idx],
            time=calib.time[idx],
            robot_dim=calib.robot_dim,
            policy=calib.policy,
            source=calib.source,
            suites=[calib.suites[i] for i in idx] if calib.suites else [],
        )

    def truth(self, calib: FlowCalibrationSet) -> np.ndarray:
        return calib.actions[..., : calib.robot_dim].reshape(len(calib), -1)

    def _velocity(self, model, calib: FlowCalibrationSet, idx: list[int], device, dtype):
        a, eps, t = calib.flow(idx, device)
        x_t = t[:, None, None] * eps + (1.0 - t[:, None, None]) * a
        v = model.joint_velocity(**calib.inputs(idx, device, dtype), x_t=x_t, t=t)
        return v, x_t, a, eps, t

    def loss(self, model, calib, idx, device, dtype, with_aux, reduction="mean"):
        v, _, a, eps, _ = self._velocity(model, calib, idx, device, dtype)
        return flow_loss(v, eps, a, calib.robot_dim, reduction), None

    def action_output(self, model, calib, i, device, dtype):
        v, x_t, _, _, t = self._velocity(model, calib, [i], device, dtype)
        chunk = x_t - t[:, None, None] * v.float()  # the clean chunk the velocity points to
        return chunk[..., : calib.robot_dim].reshape(1, -1)

    def token_table(self, model):
        return model.llm.embed_tokens.weight

    def tower_inputs(self) -> dict[str, str]:
        # the Gemma layers have no forward of their own (joint_layer runs them): X enters each stack's
        # first input norm; SigLIP's first encoder layer takes the patch embeddings of every camera
        return {
            "v": f"{_PG}.vision_tower.vision_model.encoder.layers.0",
            "llm": f"{_PG}.language_model.layers.0.input_layernorm",
            "aex": f"{_EXPERT}.layers.0.input_layernorm",
        }

    def tower_of(self, gguf_name: str, component: str) -> str:
        return {"vision": "v", "expert": "aex"}.get(component, "llm")

    def dead_tensors(self, names, cfg) -> set[str]:
        """The last PaliGemma layer's q/o/MLP (only its K/V feed the expert) and the tables no action reads,
        where a source still holds them (a preset's state dict; checkpoints are read without them)."""
        from omnimodel.archs.pi0 import names as nm
        from omnimodel.archs.pi0.model import PI0

        with torch.device("meta"):  # the key list only
            keys = list(PI0(cfg).state_dict())
        dead = {g for k in nm.dead_keys(keys, cfg.llm.depth) for g in nm.gguf_names(k)}
        return dead & set(names)

    def describe(self) -> dict:
        return super().describe() | {
            "noise": "per frame i: eps ~ N(0, 1), t ~ Beta(alpha, beta) * scale + offset (the checkpoint's "
            "time_sampling_*, else 1.5, 1, 0.999, 0.001), from default_rng([seed, i])",
            "action_output": "x_t - t v(x_t, t) over the robot's action dims",
        }


def calibration(arch: Any) -> FlowCalibration:
    """The seam's answer (PackageArch.quant_calibration)."""
    return FlowCalibration(arch)
