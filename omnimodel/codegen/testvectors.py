"""Skill parity test vectors: one GGUF of a module's weights, the runtime metadata, `in.N` and `out`.

Run `python -m omnimodel.codegen.testvectors [SKILLS_DIR]`: every registered arch (re)writes the
vectors of the skills its graph calls, from a micro instance of itself (Arch.write_test_vectors);
weights carry their GGUF names with the converter's transforms applied.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np

from omnimodel.atomic import atomic_path
from omnimodel.ggufio.constants import Keys

MODULE_KEY = Keys.Module.NAME
CLASS_KEY = Keys.Module.CLASS


def write_vector(path: Path, module: str, cls: str, weights: dict[str, np.ndarray], meta: dict,
                 inputs: list[np.ndarray], out: np.ndarray, arch_name: str = "") -> None:
    """One test vector GGUF (general.architecture = `arch_name`)."""
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch=arch_name)
        w.add_string(MODULE_KEY, module)
        w.add_string(CLASS_KEY, cls)
        for k, v in meta.items():
            if isinstance(v, bool):
                w.add_bool(k, v)
            elif isinstance(v, int):
                w.add_uint32(k, v)
            elif isinstance(v, float):
                w.add_float32(k, v)
            else:
                w.add_array(k, v)
        for name, arr in weights.items():
            w.add_tensor(name, np.ascontiguousarray(arr, np.float32))
        for i, arr in enumerate(inputs):
            dtype = np.int32 if arr.dtype.kind in "iu" else np.float32
            w.add_tensor(f"in.{i}", np.ascontiguousarray(arr, dtype))
        w.add_tensor("out", np.ascontiguousarray(out, np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def write_all(root: Path | None = None, seed: int = 0) -> list[Path]:
    """(Re)write every registered arch's skill test vectors under `root` (default: the skills folder)."""
    from omnimodel import archs

    written: list[Path] = []
    for arch in archs.registry().values():
        written += arch.write_test_vectors(Path(root) if root else None, seed)
    return written


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        sys.stdout.write(f"{p} {p.stat().st_size} bytes\n")
