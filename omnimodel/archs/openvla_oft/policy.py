"""The PyTorch policy: `predict_action(images, proprio, instruction)` as OFT's get_vla_action does it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from omnimodel.archs.openvla_oft.checkpoint import STATS_FILE, load_model
from omnimodel.archs.openvla_oft.model import OpenVLAOFT
from omnimodel.archs.openvla_oft.prompt import prompt_ids
from omnimodel.errors import CheckpointError
from omnimodel.models import preprocess
from omnimodel.models.tokenizer import load_tokenizer


@dataclass
class PolicyInputs:
    """Tensors of one control step, batch 1."""

    pixel_values: torch.Tensor  # (1, 6 * n_images, 224, 224)
    input_ids: torch.Tensor  # (1, T) BOS + prompt + '▁'
    proprio: torch.Tensor  # (1, proprio_dim) normalised


class TorchPolicy:
    """A checkpoint run in PyTorch; the native runtime offers the same `predict_action`."""

    backend = "pytorch"

    def __init__(self, model: OpenVLAOFT, tokenizer: Tokenizer, stats: dict, center_crop: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.stats = stats
        self.center_crop = center_crop

    @property
    def cfg(self):
        return self.model.cfg

    def prepare(self, images: list[np.ndarray], proprio: np.ndarray, instruction: str) -> PolicyInputs:
        """Crop, normalise and tokenise one observation."""
        dtype = next(self.model.parameters()).dtype
        px = torch.from_numpy(preprocess.pixel_values(images, self.cfg.dino.image, self.center_crop)).to(
            dtype
        )
        ids = torch.tensor([prompt_ids(self.tokenizer, instruction)], dtype=torch.long)
        prop = torch.from_numpy(preprocess.normalize_proprio(proprio, self.stats))[None].to(dtype)
        return PolicyInputs(px, ids, prop)

    @torch.no_grad()
    def predict_normalized(self, inputs: PolicyInputs) -> np.ndarray:
        """(chunk, action_dim) actions in [-1, 1] units."""
        out = self.model(inputs.pixel_values, inputs.input_ids, inputs.proprio)
        return out.actions[0].float().cpu().numpy()

    def predict_action(self, images: list[np.ndarray], proprio: np.ndarray, instruction: str) -> np.ndarray:
        """(chunk, action_dim) actions in un-normalised units."""
        if len(images) != self.cfg.num_images:
            raise CheckpointError(
                f"the policy takes {self.cfg.num_images} images (third-person first), got {len(images)}"
            )
        norm = self.predict_normalized(self.prepare(images, proprio, instruction))
        return preprocess.unnormalize_actions(norm, self.stats)


def load_policy(
    ckpt: str | Path,
    unnorm_key: str | None = None,
    dtype: torch.dtype = torch.float32,
    center_crop: bool = True,
) -> TorchPolicy:
    """Load a checkpoint directory as a PyTorch policy."""
    ckpt = Path(ckpt)
    model = load_model(ckpt, dtype)
    stats_path = ckpt / STATS_FILE
    if not stats_path.exists():
        raise CheckpointError(
            f"{stats_path}: missing; actions cannot be un-normalised without dataset statistics"
        )
    _, stats = preprocess.select_stats(json.loads(stats_path.read_text()), unnorm_key)
    return TorchPolicy(model, load_tokenizer(ckpt), stats, center_crop)
