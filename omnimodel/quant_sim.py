"""The PyTorch simulation of a GGUF: the checkpoint's model with every weight replaced by its dequantized GGUF value."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnimodel.ggufio import names


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


# The type GGML's CPU matmul converts activations to before the dot product, per weight type
# (type_traits_cpu[...].vec_dot_type in the pinned ggml-cpu.c).
ACTIVATION_TYPE = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q8_0": "Q8_0", "IQ4_NL": "Q8_0",
    "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K", "IQ4_XS": "Q8_K",
    "IQ2_XXS": "Q8_K", "IQ2_XS": "Q8_K", "IQ2_S": "Q8_K", "IQ3_XXS": "Q8_K", "IQ3_S": "Q8_K",
    "IQ1_S": "Q8_K", "IQ1_M": "Q8_K",
}  # fmt: skip


def quantize_activations(x: torch.Tensor, act_type: str) -> torch.Tensor:
    """x rounded the way GGML's CPU matmul rounds it for a weight of the given activation type."""
    if act_type == "F32":
        return x
    if act_type == "F16":
        return x.half().float()
    if act_type == "BF16":
        return x.bfloat16().float()
    block = 256 if act_type == "Q8_K" else 32
    if x.shape[-1] % block:
        return x
    xb = x.float().reshape(-1, block)
    if act_type == "Q8_K":  # quantize_row_q8_K: iscale = -127 / (signed value of largest magnitude)
        idx = xb.abs().argmax(-1, keepdim=True)
        mx = xb.gather(-1, idx)
        iscale = torch.where(mx != 0, -127.0 / mx, torch.zeros_like(mx))
        q = torch.round(iscale * xb).clamp(max=127)  # nearest_int rounds half to even
        out = torch.where(mx != 0, q / iscale, torch.zeros_like(xb))
    else:  # quantize_row_q8_0: d = amax / 127 stored as fp16, q = roundf(x / d)
        amax = xb.abs().amax(-1, keepdim=True)
        d = amax / 127.0
        idv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
        v = xb * idv
        q = torch.sign(v) * torch.floor(v.abs() + 0.5)
        out = q * d.half().float()
    return out.reshape(x.shape).to(x.dtype)


class GGMLLinear(nn.Module):
    """A Linear whose row blocks (one per GGUF tensor) see activations rounded as GGML rounds them."""

    def __init__(self, linear: nn.Linear, slices: list[tuple[int, int, str]]):
        super().__init__()
        self.weight, self.bias, self.slices = linear.weight, linear.bias, slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start, stop, act in self.slices:
            b = None if self.bias is None else self.bias[start:stop]
            outs.append(F.linear(quantize_activations(x, act), self.weight[start:stop], b))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


def gguf_types(path: Path) -> dict[str, str]:
    """GGML type name of every tensor in a GGUF file."""
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


def emulate_activation_rounding(model: nn.Module, types: dict[str, str]) -> int:
    """Swap each Linear whose GGUF weight is not F32 for a GGMLLinear; returns how many were swapped."""
    arch = names.arch_for(config=getattr(model, "cfg", None))
    swapped = 0
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, nn.Linear):
            continue
        try:
            targets = arch.gguf_names(f"{name}.weight")
        except KeyError:
            continue
        if not targets:
            continue
        acts = [ACTIVATION_TYPE.get(types.get(t, "F32"), "F32") for t in targets]
        if all(a == "F32" for a in acts):
            continue
        rows = mod.weight.shape[0] // len(targets)
        slices = [(i * rows, (i + 1) * rows, a) for i, a in enumerate(acts)]
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, GGMLLinear(mod, slices))
        swapped += 1
    return swapped


def simulate(model: nn.Module, gguf_path: Path, emulate_activations: bool = True) -> nn.Module:
    """Load the dequantized GGUF weights into `model` in place (inverting the converter's layout).

    With `emulate_activations`, every matmul whose weight GGML stores quantized also rounds its
    input as GGML's CPU kernels do (Q8_K / Q8_0 blocks, F16), so the simulation is the arithmetic
    the native build performs, not only its weights.
    """
    cfg = model.cfg
    arch = names.arch_for(config=cfg)
    permuted = {n for n, steps in arch.default_transforms(cfg).items() if "permute_rope" in steps}
    stored = read_gguf_dequantized(gguf_path)
    new_state = {}
    for key, value in model.state_dict().items():
        try:
            targets = arch.gguf_names(key)
        except KeyError:
            continue
        if not targets or any(t not in stored for t in targets):
            continue
        if len(targets) > 1:
            arr = np.concatenate([stored[t] for t in targets], axis=0)
        else:
            arr = stored[targets[0]]
            t = targets[0]
            if t in permuted:
                arr = rope_unpermute(arr, arch.rope_heads(t, cfg))
        new_state[key] = torch.from_numpy(np.array(arr.reshape(value.shape))).to(value.dtype)
    model.load_state_dict(new_state, strict=False)
    if emulate_activations:
        emulate_activation_rounding(model, gguf_types(gguf_path))
    return model
