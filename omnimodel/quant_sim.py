"""The PyTorch simulation of a GGUF: the checkpoint's model with every weight replaced by its dequantized GGUF value."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from omnimodel.ggufio import names
from omnimodel.models.openvla_oft import OpenVLAOFT


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation: HF rotate-half pairs → GGML interleaved pairs."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k permutation (GGML interleaved pairs → HF rotate-half)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf_dequantized(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF file dequantized to float32, in PyTorch shape order."""
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(arr, np.float32).reshape([int(x) for x in reversed(t.shape.tolist())])
    return out


def simulate(model: OpenVLAOFT, gguf_path: Path) -> OpenVLAOFT:
    """Load the dequantized GGUF weights into `model` in place (inverting the converter's layout)."""
    cfg = model.cfg
    stored = read_gguf_dequantized(gguf_path)
    new_state = {}
    for key, value in model.state_dict().items():
        try:
            targets = names.gguf_names(key)
        except KeyError:
            continue
        if any(t not in stored for t in targets):
            continue
        if len(targets) == 3:
            arr = np.concatenate([stored[t] for t in targets], axis=0)
        else:
            arr = stored[targets[0]]
            t = targets[0]
            if t.startswith("blk.") and t.endswith(("attn_q.weight", "attn_k.weight")):
                arr = rope_unpermute(arr, cfg.heads if "attn_q" in t else cfg.kv_heads)
        new_state[key] = torch.from_numpy(np.ascontiguousarray(arr.reshape(value.shape))).to(value.dtype)
    model.load_state_dict(new_state, strict=False)
    return model
