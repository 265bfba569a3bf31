"""Read a GGUF file's metadata and tensor table (for `omnimodel inspect` and tests)."""

from __future__ import annotations

import mmap
import os
import struct
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
                {"name": t.name, "type": t.ggml_type, "shape": list(t.shape), "bytes": t.nbytes}
                for t in self.tensors
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


_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> bytes
_STRING, _ARRAY = 8, 9
_MAX_COUNT = 1 << 24  # tensors, keys, or items of one array: far above any real file
_MAX_DIMS = 4  # GGML_MAX_DIMS


class _Cursor:
    """Reads little-endian fields from a byte buffer; running past its end names the field being read."""

    def __init__(self, path: Path, buf: bytes | mmap.mmap):
        self.path, self.buf, self.pos = path, buf, 0

    def skip(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(
                f"{self.path}: truncated at byte {len(self.buf)} reading {what} (needs byte {self.pos + n}); "
                "re-create it with `omnimodel quantize`"
            )
        self.pos += n

    def take(self, n: int, what: str) -> bytes:
        self.skip(n, what)
        return self.buf[self.pos - n : self.pos]  # a copy: no view may outlive the map

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def count(self, what: str, item_bytes: int) -> int:
        n = self.u64(what)
        if n > _MAX_COUNT or n * item_bytes > len(self.buf) - self.pos:
            raise GGUFError(
                f"{self.path}: truncated at byte {len(self.buf)} or corrupt: {what} = {n} cannot fit; "
                "re-create it with `omnimodel quantize`"
            )
        return n

    def string(self, what: str) -> str:
        raw = self.take(self.count(f"length of {what}", 1), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(
                f"{self.path}: {what} is not UTF-8; re-create it with `omnimodel quantize`"
            ) from None

    def value(self, vtype: int, what: str, depth: int = 0) -> object:
        if vtype in _SCALAR:
            raw = self.take(_SCALAR[vtype], what)
            return int.from_bytes(raw, "little") if vtype in (4, 10) else None
        if vtype == _STRING:
            self.string(what)
            return None
        if vtype == _ARRAY and depth < 2:
            itype = self.u32(f"item type of {what}")
            if itype in _SCALAR:
                n = self.count(f"item count of {what}", _SCALAR[itype])
                self.skip(n * _SCALAR[itype], what)
            else:
                n = self.count(f"item count of {what}", 8 if itype == _STRING else 12)
                for i in range(n):
                    self.value(itype, f"{what}[{i}]", depth + 1)
            return None
        raise GGUFError(
            f"{self.path}: {what} has unknown value type {vtype}; re-create it with `omnimodel quantize`"
        )


def check_layout(path: Path, buf: bytes | mmap.mmap) -> None:
    """Bounds-check a GGUF file's header, metadata, tensor table, alignment and tensor data against its size."""
    cur = _Cursor(path, buf)
    if bytes(cur.take(4, "the magic")) != b"GGUF":
        raise GGUFError(f"{path}: not a GGUF file (bad magic); re-create it with `omnimodel quantize`")
    version = cur.u32("the version")
    if version not in (2, 3):
        raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3); re-create it")
    n_tensors = cur.count("the tensor count", 24)
    n_kv = cur.count("the metadata key count", 12)
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        vtype = cur.u32(f"the type of {key}")
        value = cur.value(vtype, f"metadata {key}")
        if key == "general.alignment":
            if vtype != 4 or not value or value & (value - 1):
                raise GGUFError(
                    f"{path}: general.alignment = {value!r} is not a power-of-two uint32; re-create it"
                )
            alignment = value
    tensors = []
    for i in range(n_tensors):
        name = cur.string(f"the name of tensor #{i}")
        n_dims = cur.u32(f"the dimension count of tensor {name}")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise GGUFError(
                f"{path}: tensor {name}: {n_dims} dimensions (1 to {_MAX_DIMS} allowed); re-create it"
            )
        dims = [cur.u64(f"the shape of tensor {name}") for _ in range(n_dims)]
        ttype = cur.u32(f"the type of tensor {name}")
        offset = cur.u64(f"the data offset of tensor {name}")
        tensors.append((name, dims, ttype, offset))
    data_start = -(-cur.pos // alignment) * alignment
    for name, dims, ttype, offset in tensors:
        try:
            block, type_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise GGUFError(f"{path}: tensor {name}: unknown GGML type {ttype}; re-create it") from None
        n = 1
        for d in dims:
            n *= d
        if dims[0] % block or n > len(buf):
            raise GGUFError(
                f"{path}: tensor {name}: shape {dims} does not fit GGML type {ttype}; re-create it"
            )
        if offset % alignment:
            raise GGUFError(
                f"{path}: tensor {name}: data offset {offset} is not aligned to {alignment}; re-create it"
            )
        end = data_start + offset + n // block * type_bytes
        if end > len(buf):
            raise GGUFError(
                f"{path}: truncated at byte {len(buf)}, tensor {name} (needs byte {end}); "
                "re-create it with `omnimodel quantize`"
            )


def open_reader(path: str | os.PathLike) -> gguf.GGUFReader:
    """gguf's reader on `path`, after `check_layout`; any parse failure is a one-line GGUFError."""
    path = Path(path)
    if path.is_dir():
        raise GGUFError(f"{path}: a folder, not a GGUF file; a run's is {path / 'model.gguf'}")
    if not path.is_file():
        raise GGUFError(f"{path}: no such file")
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise GGUFError(f"{path}: empty file, not a GGUF file; re-create it with `omnimodel quantize`")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            check_layout(path, mm)
    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # the gguf package raises ValueError, struct errors, IndexError...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GGUFError(
            f"{path}: not a valid GGUF file ({msg}); re-create it with `omnimodel quantize`"
        ) from None


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
    lines = [
        f"{s.path}  ({s.file_bytes / 1e6:.2f} MB, {len(s.tensors)} tensors, {s.bpw:.3f} bpw)",
        "metadata:",
    ]
    for k, v in s.metadata.items():
        text = str(v)
        lines.append(f"  {k} = {text if len(text) <= 100 else text[:97] + '...'}")
    lines.append("tensors:")
    width = max((len(t.name) for t in s.tensors), default=10)
    for t in s.tensors:
        lines.append(
            f"  {t.name:<{width}}  {t.ggml_type:<8} {'x'.join(map(str, t.shape)):<14} {t.nbytes:>12,d} B"
        )
    lines.append("bits per weight by component:")
    for comp, b in s.bpw_by_component.items():
        lines.append(f"  {comp:<18} {b:7.3f}")
    lines.append(f"  {'overall':<18} {s.bpw:7.3f}")
    return "\n".join(lines)
