"""The GGML tensor types we write: ids, block sizes, bytes per block, and input validation."""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import torch

from omnimodel.errors import QuantError

QK_K = 256


@dataclass(frozen=True)
class QuantFormat:
    """One GGML type: its name, enum id, elements per block and bytes per block."""

    name: str
    ggml_type: int
    block_size: int
    type_size: int

    @property
    def bpw(self) -> float:
        """Effective bits per weight, scales included."""
        return 8.0 * self.type_size / self.block_size

    def row_bytes(self, cols: int) -> int:
        """Bytes of one row of `cols` elements."""
        return cols // self.block_size * self.type_size


_NAMES = [
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K",
    "IQ4_NL", "IQ4_XS", "IQ3_S", "IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS",
    "IQ1_M", "IQ1_S",
]


def _build_table() -> dict[str, QuantFormat]:
    table = {}
    for name in _NAMES:
        qt = gguf.GGMLQuantizationType[name]
        block, size = gguf.GGML_QUANT_SIZES[qt]
        table[name] = QuantFormat(name, int(qt), block, size)
    return table


FORMATS: dict[str, QuantFormat] = _build_table()

# Fallback chain when a type's block does not divide a row: the next type that fits.
FALLBACK = {
    "Q6_K": "Q8_0", "Q5_K": "Q8_0", "Q4_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q2_K": "IQ4_NL",
    "IQ4_XS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ2_XS": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ1_S": "IQ4_NL", "IQ4_NL": "Q8_0", "Q8_0": "F16",
}


def get_format(name: str) -> QuantFormat:
    """The format for a type name (case-insensitive), or QuantError listing the known ones."""
    key = name.upper()
    if key not in FORMATS:
        raise QuantError(f"unknown GGML type {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[key]


def format_of_id(ggml_type: int) -> QuantFormat:
    """The format for a GGML type id."""
    for fmt in FORMATS.values():
        if fmt.ggml_type == int(ggml_type):
            return fmt
    raise QuantError(f"GGML type id {ggml_type} is not one we encode or decode")


def fitting_type(name: str, cols: int) -> str:
    """`name` if its block divides `cols`, else the first type down the fallback chain that does."""
    cur = name.upper()
    while FORMATS[cur].block_size > 1 and cols % FORMATS[cur].block_size:
        cur = FALLBACK.get(cur, "F32")
    return cur


def check_input(w: torch.Tensor, fmt: QuantFormat, importance: torch.Tensor | None, tensor_name: str) -> None:
    """Raise QuantError naming the tensor when it cannot be encoded as `fmt`."""
    if w.dim() != 2:
        raise QuantError(f"tensor {tensor_name!r}: expected a 2-D [rows, cols] matrix, got shape {tuple(w.shape)}")
    cols = w.shape[1]
    if cols % fmt.block_size:
        raise QuantError(
            f"tensor {tensor_name!r}: row length {cols} is not a multiple of {fmt.name}'s block size "
            f"{fmt.block_size}; pick a type that fits (see omnimodel.quant.formats.fitting_type)"
        )
    if w.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(w))).all()):  # NaN propagates, no bool copy
        raise QuantError(f"tensor {tensor_name!r}: holds NaN or Inf values; fix the checkpoint before quantizing")
    if importance is not None:
        if tuple(importance.shape) != tuple(w.shape):
            raise QuantError(
                f"tensor {tensor_name!r}: importance has shape {tuple(importance.shape)}, "
                f"expected the weight's shape {tuple(w.shape)}"
            )
        if not torch.isfinite(importance).all() or (importance < 0).any():
            raise QuantError(f"tensor {tensor_name!r}: importance must be finite and non-negative")
