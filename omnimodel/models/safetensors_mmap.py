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


def open_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Map `path` and return its tensors as views; a truncated or corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: shard missing; re-download it or fix model.safetensors.index.json")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes); re-download it")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(f"{path}: corrupt safetensors header (length {n}, file {size} bytes); re-download it")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc}); re-download it") from None
        header.pop("__metadata__", None)
        data_start = 8 + n
        end = max((v["data_offsets"][1] for v in header.values()), default=0)
        if data_start + end > size:
            raise CheckpointError(
                f"{path}: truncated safetensors file: header needs {data_start + end} bytes, file has {size}; re-download it"
            )
        if end == 0:
            return {}
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    out = {}
    for key, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {key} has unsupported dtype {info['dtype']}")
        begin, stop = info["data_offsets"]
        count = (stop - begin) // torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(mm, dtype=dtype, count=count, offset=data_start + begin) if count else torch.empty(0, dtype=dtype)
        out[key] = t.reshape(info["shape"])
    return out
