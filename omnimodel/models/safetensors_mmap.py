"""A zero-copy safetensors reader: tensors are views of a private memory map, never read whole."""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import torch

from omnimodel.errors import CheckpointError

_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


_ITEMSIZE = {name: torch.empty((), dtype=dt).element_size() for name, dt in _DTYPES.items()}
_MAX_HEADER = 100_000_000
_MAX_DIMS = 16


def _entry_problem(info: object) -> str | None:
    """Why one header entry is malformed (None when it is well formed)."""
    if not isinstance(info, dict):
        return "entry is not a JSON object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        return f"unsupported dtype {dtype!r}"
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS:
        return f"shape {shape!r} is not a list of at most {_MAX_DIMS} sizes"
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        return f"shape {shape!r} holds a negative or non-integer size"
    if not (isinstance(offsets, list) and len(offsets) == 2):
        return f"data_offsets {offsets!r} is not a pair of integers"
    begin, end = offsets
    if not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) or not 0 <= begin <= end:
        return f"data_offsets {offsets!r} are not integers with 0 <= begin <= end"
    numel = 1
    for n in shape:
        numel *= n
    if end - begin != numel * _ITEMSIZE[dtype]:
        return f"data_offsets span {end - begin} bytes but shape {shape} of {dtype} needs {numel * _ITEMSIZE[dtype]}"
    return None


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """A shard's header, every entry checked against the file: known dtype, shape, offsets that tile the data.

    Entries must cover the data section exactly, sorted from byte 0 with no gap or overlap, so a header
    shifted by a byte is refused instead of loading garbage weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: shard missing; re-download it or fix model.safetensors.index.json")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes); re-download the shard")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > size - 8 or n > _MAX_HEADER:
            raise CheckpointError(
                f"{path}: corrupt safetensors header (length {n}, file {size} bytes); re-download the shard"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: corrupt safetensors header ({msg}); re-download the shard") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object; re-download the shard")
    meta = header.pop("__metadata__", None)
    if meta is not None and not isinstance(meta, dict):
        raise CheckpointError(f"{path}: tensor __metadata__: not a JSON object; re-download the shard")
    for key, info in header.items():
        problem = _entry_problem(info)
        if problem:
            raise CheckpointError(f"{path}: tensor {key}: {problem}; re-download the shard")
    data = size - 8 - n
    cursor = 0
    for key, info in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        begin, end = info["data_offsets"]
        if begin != cursor:
            what = "overlaps the previous tensor" if begin < cursor else f"leaves a gap of {begin - cursor} bytes"
            raise CheckpointError(f"{path}: tensor {key}: data_offsets {[begin, end]} {what}; re-download the shard")
        if end > data:
            raise CheckpointError(
                f"{path}: truncated at byte {8 + n + data}, tensor {key} needs bytes up to {8 + n + end}; re-download the shard"
            )
        cursor = end
    if cursor != data:
        raise CheckpointError(
            f"{path}: tensor data ends at byte {8 + n + cursor} but the file has {size} bytes; re-download the shard"
        )
    return header


def open_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Map `path` and return its tensors as views; a truncated or corrupt file is a CheckpointError."""
    path = Path(path)
    header = read_safetensors_header(path)
    data_start = path.stat().st_size - max((v["data_offsets"][1] for v in header.values()), default=0)
    if not any(v["data_offsets"][1] for v in header.values()):
        return {k: torch.empty(v["shape"], dtype=_DTYPES[v["dtype"]]) for k, v in header.items()}
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    out = {}
    for key, info in header.items():
        dtype = _DTYPES[info["dtype"]]
        begin, stop = info["data_offsets"]
        count = (stop - begin) // _ITEMSIZE[info["dtype"]]
        t = torch.frombuffer(mm, dtype=dtype, count=count, offset=data_start + begin) if count else torch.empty(0, dtype=dtype)
        out[key] = t.reshape(info["shape"])
    return out
