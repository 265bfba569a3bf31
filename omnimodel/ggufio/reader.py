"""Read a GGUF file's metadata and tensor table (for `omnimodel inspect` and tests)."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from omnimodel.errors import GGUFError
from omnimodel.ggufio import names


@dataclass
class TensorEntry:
    """One tensor of a GGUF file: name, GGML type name, logical shape (row-major), bytes, element count."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    nbytes: int
    n_elements: int


@dataclass
class GGUFSummary:
    """Metadata, tensor table and bits-per-weight of one GGUF file."""

    path: Path
    metadata: dict[str, Any]
    tensors: list[TensorEntry]
    file_bytes: int
    bpw: float = 0.0
    bpw_by_component: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """A JSON-serialisable view."""
        return {
            "path": str(self.path),
            "file_bytes": self.file_bytes,
            "bpw": self.bpw,
            "bpw_by_component": self.bpw_by_component,
            "metadata": self.metadata,
            "tensors": [
                {"name": t.name, "type": t.ggml_type, "shape": list(t.shape), "bytes": t.nbytes} for t in self.tensors
            ],
        }


def _field_value(f: gguf.ReaderField) -> Any:
    if not f.types:
        return None
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if len(f.data) > 64:
            return f"<array of {len(f.data)}>"
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


def open_reader(path: str | os.PathLike) -> gguf.GGUFReader:
    """gguf's reader on `path`, with any parse failure turned into a one-line GGUFError."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: no such file")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # the gguf package raises ValueError, struct errors, IndexError...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GGUFError(f"{path}: not a valid GGUF file ({msg}); re-create it with `omnimodel quantize`") from None


def summarize(path: str | os.PathLike) -> GGUFSummary:
    """Metadata, tensors, overall and per-component bits per weight of a GGUF file."""
    path = Path(path)
    reader = open_reader(path)
    meta = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        meta[key] = _field_value(f)
    tensors = []
    bits: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        entry = TensorEntry(t.name, t.tensor_type.name, shape, int(t.n_bytes), int(t.n_elements))
        tensors.append(entry)
        comp = names.component_of(t.name)
        bits[comp] += 8.0 * entry.nbytes
        count[comp] += entry.n_elements
    total_bits, total_n = sum(bits.values()), sum(count.values())
    return GGUFSummary(
        path=path,
        metadata=meta,
        tensors=tensors,
        file_bytes=path.stat().st_size,
        bpw=total_bits / total_n if total_n else 0.0,
        bpw_by_component={c: bits[c] / count[c] for c in sorted(bits) if count[c]},
    )


def read_tensor_bytes(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...], torch.Tensor]]:
    """Every tensor's (type name, logical shape, raw uint8 bytes) from a GGUF file."""
    reader = open_reader(path)
    out = {}
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
        out[t.name] = (t.tensor_type.name, shape, torch.from_numpy(raw.copy()))
    return out


def format_summary(s: GGUFSummary) -> str:
    """Human-readable table of a summary."""
    lines = [f"{s.path}  ({s.file_bytes / 1e6:.2f} MB, {len(s.tensors)} tensors, {s.bpw:.3f} bpw)", "metadata:"]
    for k, v in s.metadata.items():
        text = str(v)
        lines.append(f"  {k} = {text if len(text) <= 100 else text[:97] + '...'}")
    lines.append("tensors:")
    width = max((len(t.name) for t in s.tensors), default=10)
    for t in s.tensors:
        lines.append(f"  {t.name:<{width}}  {t.ggml_type:<8} {'x'.join(map(str, t.shape)):<14} {t.nbytes:>12,d} B")
    lines.append("bits per weight by component:")
    for comp, b in s.bpw_by_component.items():
        lines.append(f"  {comp:<18} {b:7.3f}")
    lines.append(f"  {'overall':<18} {s.bpw:7.3f}")
    return "\n".join(lines)
