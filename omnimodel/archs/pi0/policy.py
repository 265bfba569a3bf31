"""The PyTorch policy: `predict_action(images, state, instruction)` with the transforms of the checkpoint's origin.

openpi (PyTorch conversion): cameras base / left wrist / right wrist (missing ones black, masked),
state and actions normalised with +1e-6 (π0 mean/std, π0.5 quantiles); π0.5 as pi05_libero feeds no
state at all and uses the π0 prompt; π0 LIBERO (`extra_delta_transform`) adds the state back to
action dims 0..5. LeRobot: the config's image features then `empty_cameras` masked slots, the
normalization_mapping with eps 1e-8, π0.5 writes the normalised state into the prompt as 256 bins,
relative actions per `use_relative_actions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from omnimodel.archs.pi0 import checkpoint as ck
from omnimodel.archs.pi0.model import PI0, PiConfig
from omnimodel.archs.pi0.tokenizer import discretize_state, prompt_text, tokenize_prompt
from omnimodel.errors import CheckpointError

OPENPI_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


@dataclass
class PolicySpec:
    """How one checkpoint's observations become model inputs and its outputs become actions."""

    origin: str  # "lerobot" | "openpi"
    camera_keys: tuple[str, ...]  # the real cameras, in slot order; the remaining slots are empty
    state_mode: str  # mean_std | quantile | quantile10 | min_max | identity
    action_mode: str
    eps: float
    state_token: bool  # π0: the normalised, padded state is the first suffix token
    state_in_prompt: bool  # π0.5: the normalised state is written into the prompt as bins
    clean_task: bool  # openpi (and LeRobot π0.5) strip the task and map '_' and newlines to spaces
    action_dim: int  # the robot's action dims (the rest of the 32 are padding)
    delta_mask: tuple[bool, ...] | None  # dims to which the raw state is added back


def normalize(x: np.ndarray, stats: dict[str, np.ndarray], mode: str, eps: float, openpi: bool) -> np.ndarray:
    """To model units, as openpi (eps always added) or LeRobot (eps on std, or for an empty range) does it."""
    d = x.shape[-1]
    if mode == "identity":
        return x
    if mode == "mean_std":
        return (x - stats["mean"][:d]) / (stats["std"][:d] + eps)
    lo_key, hi_key = {"quantile": ("q01", "q99"), "quantile10": ("q10", "q90"), "min_max": ("min", "max")}[
        mode
    ]
    lo, hi = stats[lo_key][:d], stats[hi_key][:d]
    if openpi:
        return (x - lo) / (hi - lo + eps) * 2.0 - 1.0
    span = np.where(hi - lo == 0, eps, hi - lo)
    return 2.0 * (x - lo) / span - 1.0


def unnormalize(
    x: np.ndarray, stats: dict[str, np.ndarray], mode: str, eps: float, openpi: bool
) -> np.ndarray:
    """From model units back to the dataset's, the inverse of `normalize`."""
    d = x.shape[-1]
    if mode == "identity":
        return x
    if mode == "mean_std":
        return x * (stats["std"][:d] + eps) + stats["mean"][:d]
    lo_key, hi_key = {"quantile": ("q01", "q99"), "quantile10": ("q10", "q90"), "min_max": ("min", "max")}[
        mode
    ]
    lo, hi = stats[lo_key][:d], stats[hi_key][:d]
    span = hi - lo + eps if openpi else np.where(hi - lo == 0, eps, hi - lo)
    return (x + 1.0) / 2.0 * span + lo


def _needs(stats: dict, mode: str, what: str, source: str) -> None:
    keys = {
        "mean_std": ("mean", "std"),
        "quantile": ("q01", "q99"),
        "quantile10": ("q10", "q90"),
        "min_max": ("min", "max"),
    }.get(mode, ())
    missing = [k for k in keys if k not in stats]
    if missing:
        raise CheckpointError(
            f"{source}: {what} statistics lack {missing[0]}, which {mode} normalisation needs; re-export the statistics"
        )


def read_policy_spec(ckpt: Path, cfg: PiConfig, stats: ck.Stats) -> PolicySpec:
    """The transforms a checkpoint's origin implies, from its config.json and statistics."""
    raw = ck.read_raw_config(ckpt)
    source = str(Path(ckpt) / "config.json")
    if not stats.action:
        raise CheckpointError(
            f"{ckpt}: no normalisation statistics; actions cannot be un-normalised without them"
        )
    if ck.layout(raw) == "openpi":
        mode = cfg.norm_mode
        delta = raw.get("extra_delta_transform")
        if delta is None:  # openpi's pi0_libero trains on delta actions; its config.json does not say so
            delta = not cfg.pi05 and "libero" in stats.source.lower()
        action_dim = len(stats.action.get("mean", stats.action.get("q01", [])))
        return PolicySpec(
            origin="openpi",
            camera_keys=OPENPI_CAMERAS[:2],
            state_mode=mode,
            action_mode=mode,
            eps=1e-6,
            state_token=not cfg.pi05,
            state_in_prompt=cfg.pi05 and cfg.discrete_state_input,
            clean_task=True,
            action_dim=action_dim,
            delta_mask=tuple([True] * 6 + [False]) if delta else None,
        )
    state_mode, action_mode = ck.norm_modes(source, raw, cfg.pi05)
    action_dim = ck.feature_dim(source, raw, "output_features", "action") or len(
        next(iter(stats.action.values()))
    )
    delta_mask = None
    if raw.get("use_relative_actions"):
        names = raw.get("action_feature_names")
        exclude = [str(e).lower() for e in raw.get("relative_exclude_joints") or [] if e]
        if not exclude or not isinstance(names, list):
            delta_mask = tuple([True] * action_dim)
        else:
            mask = [not any(e in str(n).lower() for e in exclude) for n in names[:action_dim]]
            delta_mask = tuple(mask + [True] * (action_dim - len(mask)))
    return PolicySpec(
        origin="lerobot",
        camera_keys=tuple(ck.visual_features(source, raw)),
        state_mode=state_mode,
        action_mode=action_mode,
        eps=1e-8,
        state_token=not cfg.pi05,
        state_in_prompt=cfg.pi05,
        clean_task=cfg.pi05,
        action_dim=action_dim,
        delta_mask=delta_mask,
    )


def image_tensor(img: np.ndarray, size: int) -> torch.Tensor:
    """HWC uint8 (or float in [0, 1]) -> (3, size, size) in [-1, 1]; resize-with-pad (bilinear, centred, pad 0)."""
    x = torch.from_numpy(np.ascontiguousarray(img))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.dim() != 3 or x.shape[-1] != 3:
        raise ValueError(f"images must be HWC with 3 channels, got shape {tuple(x.shape)}")
    x = x.permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        ratio = max(w / size, h / size)
        rh, rw = int(h / ratio), int(w / ratio)
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
        ph, pw = size - rh, size - rw
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    return x[0] * 2.0 - 1.0


@dataclass
class PolicyInputs:
    """Model inputs of one control step, batch 1."""

    images: list[torch.Tensor]  # per camera slot (1, 3, S, S) in [-1, 1]
    image_masks: list[torch.Tensor]  # per slot (1,) bool
    tokens: torch.Tensor  # (1, max_token_len)
    token_mask: torch.Tensor  # (1, max_token_len) bool
    state: torch.Tensor | None  # (1, state_dim) normalised and padded (π0), else None


class TorchPolicy:
    """A π0 / π0.5 checkpoint run in PyTorch; the native runtime offers the same `predict_action`."""

    backend = "pytorch"

    def __init__(self, model: PI0, tokenizer: Tokenizer, stats: ck.Stats, spec: PolicySpec):
        self.model = model
        self.tokenizer = tokenizer
        self.stats = stats
        self.spec = spec
        self._noise_seed: int | None = None  # set by reset(): the native runtime's noise stream
        self._calls = 0

    @property
    def cfg(self) -> PiConfig:
        return self.model.cfg

    def reset(self, seed: int) -> None:
        """A new episode: predict_action's k-th noise (when none is given) is the native runtime's draw k of `seed`
        (archs/pi0/noise.py, omni_reset), so an episode's noise depends on its seed alone and PyTorch and
        native runs of one episode see the same noise. Before any reset, torch's generator draws it."""
        self._noise_seed = int(seed)
        self._calls = 0

    def prepare(self, images: list[np.ndarray], state: np.ndarray | None, instruction: str) -> PolicyInputs:
        """Resize and scale images (empty slots -1 and masked), normalise the state, build the prompt."""
        cfg, spec = self.cfg, self.spec
        if len(images) > cfg.num_cameras:
            raise CheckpointError(
                f"the policy takes at most {cfg.num_cameras} images ({', '.join(spec.camera_keys)} first), got {len(images)}"
            )
        size = cfg.vision.image
        tensors = [image_tensor(img, size)[None] for img in images]
        masks = [torch.ones(1, dtype=torch.bool) for _ in images]
        while len(tensors) < cfg.num_cameras:
            tensors.append(torch.full((1, 3, size, size), -1.0))
            masks.append(torch.zeros(1, dtype=torch.bool))
        norm_state = None
        if spec.state_token or spec.state_in_prompt:
            if state is None:
                raise CheckpointError("this policy needs the robot state")
            _needs(self.stats.state, spec.state_mode, "state", self.stats.source)
            raw = np.asarray(state, dtype=np.float64).reshape(-1)
            width = len(next(iter(self.stats.state.values())))
            if len(raw) != width:
                raise CheckpointError(
                    f"the state has {len(raw)} dims but {self.stats.source} holds statistics for {width}"
                )
            norm_state = normalize(raw, self.stats.state, spec.state_mode, spec.eps, spec.origin == "openpi")
        bins = discretize_state(norm_state) if spec.state_in_prompt else None
        text = prompt_text(instruction, bins, clean=spec.clean_task)
        ids, mask = tokenize_prompt(self.tokenizer, text, cfg.max_token_len)
        st = None
        if spec.state_token:
            padded = np.zeros(cfg.state_dim, dtype=np.float32)
            padded[: min(len(norm_state), cfg.state_dim)] = norm_state[: cfg.state_dim]
            st = torch.from_numpy(padded)[None]
        return PolicyInputs(tensors, masks, torch.from_numpy(ids)[None], torch.from_numpy(mask)[None], st)

    @torch.no_grad()
    def predict_normalized(
        self, inputs: PolicyInputs, noise: np.ndarray | torch.Tensor | None = None
    ) -> np.ndarray:
        """(H, action_dim) actions in model units (all padded dims)."""
        if noise is not None:
            noise = torch.as_tensor(np.asarray(noise), dtype=torch.float32).reshape(
                1, self.cfg.chunk, self.cfg.action_dim
            )
        dtype = next(self.model.parameters()).dtype
        out = self.model.sample_actions(
            [i.to(dtype) for i in inputs.images],
            inputs.image_masks,
            inputs.tokens,
            inputs.token_mask,
            None if inputs.state is None else inputs.state.to(dtype),
            noise,
        )
        return out[0].float().cpu().numpy()

    def analysis_sample(self, seed: int, instruction: str):
        """The analyzer's run (archs/pi0/sample.py): every camera, the native policy's first noise draw."""
        from omnimodel.archs.pi0.sample import analysis_sample

        return analysis_sample(self, seed, instruction)

    def predict_action(
        self,
        images: list[np.ndarray],
        state: np.ndarray | None,
        instruction: str,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """(H, robot action dims) actions in the dataset's units."""
        spec = self.spec
        if noise is None and self._noise_seed is not None:
            from omnimodel.archs.pi0.noise import flow_noise

            noise = flow_noise(self._noise_seed, self._calls, (self.cfg.chunk, self.cfg.action_dim))
            self._calls += 1
        norm = self.predict_normalized(self.prepare(images, state, instruction), noise)
        _needs(self.stats.action, spec.action_mode, "action", self.stats.source)
        actions = unnormalize(
            norm[:, : spec.action_dim].astype(np.float64),
            self.stats.action,
            spec.action_mode,
            spec.eps,
            spec.origin == "openpi",
        )
        if spec.delta_mask is not None:
            raw = np.asarray(state, dtype=np.float64).reshape(-1)
            dims = len(spec.delta_mask)
            actions[:, :dims] += raw[:dims] * np.asarray(spec.delta_mask, dtype=np.float64)
        return actions.astype(np.float32)


def read_tokenizer(ckpt: Path, tokenizer: str | Path | None = None) -> Tokenizer:
    """`tokenizer` (a tokenizer.json path) or the checkpoint's own tokenizer.json."""
    path = Path(tokenizer) if tokenizer is not None else Path(ckpt) / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing; π checkpoints use the PaliGemma tokenizer: copy tokenizer.json of "
            "google/paligemma-3b-pt-224 there or pass tokenizer=PATH"
        )
    return Tokenizer.from_file(str(path))


def load_policy(
    ckpt: str | Path,
    dtype: torch.dtype = torch.float32,
    tokenizer: str | Path | None = None,
    unnorm_key: str | None = None,
) -> TorchPolicy:
    """Load a checkpoint directory (openpi or LeRobot layout) as a PyTorch policy.

    `unnorm_key` is accepted for the seam's sake and ignored: a π checkpoint carries one dataset's statistics.
    """
    ckpt = Path(ckpt)
    model = ck.load_model(ckpt, dtype)
    stats = ck.read_stats(ckpt)
    spec = read_policy_spec(ckpt, model.cfg, stats)
    return TorchPolicy(model, read_tokenizer(ckpt, tokenizer), stats, spec)
