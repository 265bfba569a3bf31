"""Write a GGUF file from pre-encoded tensors and metadata, atomically (temp file + rename)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from omnimodel.atomic import atomic_path
from omnimodel.errors import GGUFError
from omnimodel.ggufio.constants import Keys
from omnimodel.quant.formats import get_format


@dataclass
class EncodedTensor:
    """One tensor ready to write: GGML type, logical shape [rows, cols] (or 1-D) and its bytes."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    data: torch.Tensor  # uint8, exactly rows*row_bytes(cols) bytes

    @property
    def nbytes(self) -> int:
        """Size of the encoded data in bytes."""
        return int(self.data.numel())


def _add_metadata(w: gguf.GGUFWriter, key: str, value: Any) -> None:
    # float64 where the caller asks for it (np.float64, a float64 array): statistics a runtime
    # must apply bit for bit as the PyTorch policy does; plain Python floats stay float32
    if isinstance(value, np.float64):
        w.add_float64(key, float(value))
    elif isinstance(value, np.ndarray) and value.ndim == 1 and value.size and value.dtype == np.float64:
        w.add_key_value(
            key, [float(v) for v in value], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT64
        )
    elif isinstance(value, np.ndarray) and value.ndim == 1 and value.size:
        _add_metadata(w, key, value.tolist())
    elif isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        if -(2**31) <= value < 2**31:
            w.add_int32(key, value) if value < 0 else w.add_uint32(key, value)
        else:
            w.add_uint64(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    elif (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float, str, bool)) for v in value)
    ):
        w.add_array(key, list(value))
    elif isinstance(value, (dict, list, tuple)):
        w.add_string(key, json.dumps(value))
    else:
        raise GGUFError(f"metadata {key!r}: cannot store a {type(value).__name__} in GGUF")


def write_gguf(
    path: str | os.PathLike,
    tensors: list[EncodedTensor],
    metadata: dict[str, Any],
    alignment: int = 32,
) -> Path:
    """Write `tensors` (in order) and `metadata` (general.architecture among it) to `path`; returns the path."""
    path = Path(path)
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise GGUFError(f"tensor {t.name!r} appears twice; every GGUF tensor name must be unique")
        seen.add(t.name)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch=str(metadata.get(Keys.General.ARCHITECTURE, "")))
        if alignment != gguf.GGUF_DEFAULT_ALIGNMENT:
            w.add_custom_alignment(alignment)
        for key, value in metadata.items():
            if key == Keys.General.ARCHITECTURE:
                continue
            _add_metadata(w, key, value)
        for t in tensors:
            fmt = get_format(t.ggml_type)
            raw = t.data.detach().to("cpu").contiguous().numpy().view(np.uint8)
            expected = int(np.prod(t.shape[:-1] or (1,))) * fmt.row_bytes(t.shape[-1])
            if raw.size != expected:
                raise GGUFError(
                    f"tensor {t.name!r}: {raw.size} bytes for {fmt.name} {t.shape}, expected {expected}"
                )
            if fmt.name == "F32":
                w.add_tensor(t.name, raw.view(np.float32).reshape(t.shape))
            elif fmt.name == "F16":
                w.add_tensor(t.name, raw.view(np.float16).reshape(t.shape))
            else:
                byte_shape = (*t.shape[:-1], fmt.row_bytes(t.shape[-1]))
                w.add_tensor(
                    t.name, raw.reshape(byte_shape), raw_dtype=gguf.GGMLQuantizationType(fmt.ggml_type)
                )
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path
