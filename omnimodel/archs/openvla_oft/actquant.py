"""OpenVLA-OFT's ActQuant calibration hooks: the suite policy's prompt, the L1 action head plus the
cross-entropy of the LM head on the action tokens, HSIC against the ground-truth chunks.

The calibration set and its frames are the plugin's (actquant_plugin.calibration.CalibrationSet):
this module only says how OFT builds, batches and scores them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from omnimodel.archs.quant_calibration import QuantCalibration


class OFTCalibration(QuantCalibration):
    """L_act = L1(predicted, ground-truth normalised chunk); L_aux = CE of the LM head at the action positions."""

    hsic_target = "truth"
    loss_name = "L1 of the action head on the normalised chunk + CE of the LM head on the action tokens"

    def calibration_set(self, root, cfg, ckpt=None, stats=None, frames=None, seed=0, tokenizer=None) -> Any:
        from actquant_plugin.calibration import from_demos
        from omnimodel.archs.openvla_oft.prompt import prompt_ids
        from omnimodel.models.tokenizer import load_tokenizer

        tok = tokenizer if tokenizer is not None or ckpt is None else load_tokenizer(Path(ckpt))
        text_vocab = getattr(cfg, "text_vocab", 32000)
        return from_demos(root, stats, tok, text_vocab, frames, seed, prompt=prompt_ids)

    def subset(self, calib, idx: np.ndarray) -> Any:
        from actquant_plugin.calibration import subset

        return subset(calib, idx)

    def batches(self, calib, batch: int) -> Iterator[list[int]]:
        """Frames in order, `batch` at a time among frames with the same prompt length."""
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(calib.prompts):
            by_len.setdefault(len(p), []).append(i)
        for idx in by_len.values():
            for s in range(0, len(idx), batch):
                yield idx[s : s + batch]

    def loss(self, model, calib, idx, device, dtype, with_aux, reduction="mean"):
        parts = [calib.inputs(i, device, dtype) for i in idx]
        px = torch.cat([p[0] for p in parts])
        ids = torch.cat([p[1] for p in parts])
        prop = torch.cat([p[2] for p in parts])
        target = torch.from_numpy(calib.actions[idx]).to(device)
        out = model(px, ids, prop, with_logits=with_aux)
        diff = (out.actions.float() - target).abs()
        l1 = diff.mean() if reduction == "mean" else diff.reshape(len(idx), -1).sum(-1).mean()
        if not with_aux:
            return l1, None
        from omnimodel.train import action_tokens

        tok = torch.from_numpy(action_tokens(calib.actions[idx], model.cfg.text_vocab)).to(device)
        logits = out.action_logits.float()
        return l1, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1))

    def action_output(self, model, calib, i, device, dtype):
        px, ids, prop = calib.inputs(i, device, dtype)
        return model(px, ids, prop).actions.reshape(1, -1)

    def has_aux_head(self, model) -> bool:
        return getattr(model, "language_model", None) is not None and hasattr(model.language_model, "lm_head")

    def token_table(self, model):
        lm = getattr(model, "language_model", None)
        return None if lm is None else lm.get_input_embeddings().weight


def calibration(arch: Any) -> OFTCalibration:
    """The seam's answer (PackageArch.quant_calibration)."""
    return OFTCalibration(arch)
