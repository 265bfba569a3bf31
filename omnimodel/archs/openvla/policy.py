"""The PyTorch policy: `predict_action(image, instruction)` as OpenVLA's predict_action does it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from omnimodel.archs.openvla.checkpoint import load_model, read_norm_stats
from omnimodel.archs.openvla.model import OpenVLA, tokens_to_actions, unnormalize
from omnimodel.archs.openvla_oft.prompt import prompt_ids
from omnimodel.errors import ConfigError
from omnimodel.models import preprocess
from omnimodel.models.tokenizer import load_tokenizer


@dataclass
class PolicyInputs:
    """Tensors of one control step, batch 1."""

    pixel_values: torch.Tensor  # (1, 6, 224, 224): DINOv2- then SigLIP-normalised RGB
    input_ids: torch.Tensor  # (1, T) BOS + prompt + '▁'


class TorchPolicy:
    """A checkpoint run in PyTorch; `stats` is the chosen dataset's norm_stats entry."""

    backend = "pytorch"

    def __init__(self, model: OpenVLA, tokenizer: Tokenizer, stats: dict, center_crop: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.stats = stats
        self.center_crop = (
            center_crop  # the LIBERO evals' 0.9-area crop, as the native runtime's default (--no-crop there)
        )

    @property
    def cfg(self):
        return self.model.cfg

    def prompt_ids(self, instruction: str) -> list[int]:
        """BOS + the released prompt + the space token."""
        return prompt_ids(self.tokenizer, instruction)

    def prepare(self, image: np.ndarray | list[np.ndarray], instruction: str) -> PolicyInputs:
        """Normalise and tokenise one observation (one HxWx3 uint8 image)."""
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if len(images) != self.cfg.num_images:
            raise ConfigError(
                f"the policy takes {self.cfg.num_images} image (third-person), got {len(images)}"
            )
        dtype = next(self.model.parameters()).dtype
        px = preprocess.pixel_values(images, self.cfg.dino.image, self.center_crop)
        ids = torch.tensor([self.prompt_ids(instruction)], dtype=torch.long)
        return PolicyInputs(torch.from_numpy(px).to(dtype), ids)

    def predict_tokens(self, inputs: PolicyInputs) -> np.ndarray:
        """The action_dim greedy tokens (cached decoding)."""
        return self.model.predict_tokens(inputs.pixel_values, inputs.input_ids)[0].numpy()

    def predict_normalized(self, inputs: PolicyInputs) -> np.ndarray:
        """(action_dim,) actions in [-1, 1]: bin centres of the greedy tokens."""
        return tokens_to_actions(self.predict_tokens(inputs), self.cfg).astype(np.float32)

    def unnormalize(self, norm: np.ndarray) -> np.ndarray:
        """BOUNDS_Q99 with the mask (float32)."""
        return unnormalize(np.asarray(norm, np.float64), {"d": self.stats}, "d").astype(np.float32)

    def predict_action(self, image: np.ndarray | list[np.ndarray], instruction: str) -> np.ndarray:
        """(action_dim,) un-normalised actions."""
        return self.unnormalize(self.predict_normalized(self.prepare(image, instruction)))

    def analysis_sample(self, seed: int, instruction: str):
        """The analyzer's run: one image, greedy decoding under the hooks (the prompt pass is what they cache)."""
        from omnimodel.analysis import Sample, sample_observation

        images, _ = sample_observation(seed, self.cfg.dino.image, 0, self.stats, n_images=self.cfg.num_images)
        inputs = self.prepare(images, instruction)

        def end_to_end(tokens: torch.Tensor) -> list[tuple[str, np.ndarray]]:
            ids = tokens[0].numpy()
            norm = tokens_to_actions(ids, self.cfg).astype(np.float32)
            return [
                ("images", np.stack(images).astype(np.int32)),
                ("token_ids", inputs.input_ids[0].numpy().astype(np.int32)),
                ("pixel_values", inputs.pixel_values.float().numpy()),
                ("action_tokens", ids.astype(np.int32)),
                ("actions_norm", norm),
                ("actions", self.unnormalize(norm)),
            ]

        return Sample(
            lambda: self.model.predict_tokens(inputs.pixel_values, inputs.input_ids),
            end_to_end,
            int(inputs.input_ids.shape[1]),
        )


def load_policy(
    ckpt: str | Path,
    unnorm_key: str | None = None,
    dtype: torch.dtype = torch.float32,
    center_crop: bool = True,
) -> TorchPolicy:
    """Load a checkpoint directory as a PyTorch policy; `unnorm_key` picks the norm_stats dataset."""
    ckpt = Path(ckpt)
    model = load_model(ckpt, dtype)
    all_stats = read_norm_stats(ckpt)
    if not all_stats:
        raise ConfigError(
            f"{ckpt / 'config.json'}: norm_stats empty; actions cannot be un-normalised without them"
        )
    if unnorm_key is None and len(all_stats) != 1:
        raise ConfigError(
            f"{ckpt / 'config.json'}: norm_stats hold {len(all_stats)} datasets ({', '.join(all_stats)}); pass unnorm_key"
        )
    if unnorm_key is not None and unnorm_key not in all_stats and f"{unnorm_key}_no_noops" not in all_stats:
        raise ConfigError(
            f"unnorm_key {unnorm_key!r} not in config.json norm_stats (has {', '.join(all_stats)})"
        )
    _, stats = preprocess.select_stats(all_stats, unnorm_key)
    return TorchPolicy(model, load_tokenizer(ckpt), stats, center_crop)
