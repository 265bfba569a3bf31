"""The quantizer plugin contract and the built-in quantizers (f32, f16, bf16, q8_0, rtn:<type>).

A quantizer looks at the tensors to be quantized (GGUF names, after the converter's transforms)
plus whatever context it needs (config, model, calibration data, a bits-per-weight budget) and
returns, per tensor, a GGML type and optionally per-element importance or fixed block scales.
The shared encoders in omnimodel.quant.encoders turn that plan into bytes. Plugins register under
the entry-point group `omnimodel.quantizers`; the entry point is a factory called with the text
after the colon of the spec (`rtn:q4_k` -> factory("q4_k")), or None.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import torch

from omnimodel.errors import QuantError
from omnimodel.quant.formats import get_format
from omnimodel.quant.scales import AffineScales, SymmetricScales

ENTRY_POINT_GROUP = "omnimodel.quantizers"


@dataclass
class TensorPlan:
    """What to do with one tensor: its GGML type and optional importance or fixed scales."""

    ggml_type: str
    importance: torch.Tensor | None = None
    scales: SymmetricScales | AffineScales | None = None


@dataclass
class QuantContext:
    """Everything a quantizer may use besides the tensors themselves."""

    config: Any = None
    model: torch.nn.Module | None = None
    calibration: Any = None
    budget_bpw: float | None = None
    extra: dict = field(default_factory=dict)


class Quantizer(abc.ABC):
    """A quantizer plugin: decides a type (and optionally importance or scales) per tensor."""

    name: str = "quantizer"

    @abc.abstractmethod
    def plan(self, tensors: Mapping[str, torch.Tensor], ctx: QuantContext) -> dict[str, TensorPlan]:
        """A TensorPlan for every tensor in `tensors` (GGUF name -> 2-D weight to quantize)."""


class UniformQuantizer(Quantizer):
    """Every quantizable tensor in one type, round-to-nearest with the plain squared error."""

    def __init__(self, ggml_type: str, name: str | None = None):
        self.ggml_type = get_format(ggml_type).name
        self.name = name or self.ggml_type.lower()

    def plan(self, tensors: Mapping[str, torch.Tensor], ctx: QuantContext) -> dict[str, TensorPlan]:
        """The same type for every tensor; no importance."""
        return {name: TensorPlan(self.ggml_type) for name in tensors}


def _fixed(ggml_type: str, name: str) -> Callable[[str | None], Quantizer]:
    def factory(arg: str | None = None) -> Quantizer:
        if arg:
            raise QuantError(f"quantizer {name!r} takes no argument (got {name}:{arg})")
        return UniformQuantizer(ggml_type, name)

    return factory


def rtn_factory(arg: str | None = None) -> Quantizer:
    """`rtn:<type>`: round-to-nearest (best block scales, no importance) in GGML type <type>."""
    if not arg:
        raise QuantError("rtn needs a type: rtn:q4_k, rtn:q2_k, rtn:iq4_xs, ...")
    return UniformQuantizer(arg, f"rtn:{arg.lower()}")


f32_factory = _fixed("F32", "f32")
f16_factory = _fixed("F16", "f16")
bf16_factory = _fixed("BF16", "bf16")
q8_0_factory = _fixed("Q8_0", "q8_0")

BUILTINS: dict[str, Callable[[str | None], Quantizer]] = {
    "f32": f32_factory,
    "f16": f16_factory,
    "bf16": bf16_factory,
    "q8_0": q8_0_factory,
    "rtn": rtn_factory,
}


def available_quantizers() -> list[str]:
    """Names of the built-in and entry-point quantizers."""
    names = set(BUILTINS)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def load_quantizer(spec: str | Quantizer) -> Quantizer:
    """The quantizer for a spec such as `q8_0`, `rtn:q4_k` or an installed plugin's name (see omnimodel.quantspec)."""
    if isinstance(spec, Quantizer):
        return spec
    from omnimodel.quantspec import parse

    return parse(spec).quantizer()
