"""A truncated or corrupt GGUF gives one GGUFError line that says where: 'truncated at byte N, tensor T' or the field."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from omnimodel.errors import GGUFError
from omnimodel.ggufio import reader

REPO = Path(__file__).resolve().parent.parent


def write_tiny_gguf(path: Path) -> Path:
    """Three tensors (F32, F16, Q8_0), scalar, string and array metadata: a small file for cutting up."""
    w = gguf.GGUFWriter(str(path), "tiny")
    w.add_uint32("tiny.block_count", 2)
    w.add_float32("tiny.rms_eps", 1e-6)
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_tensor("blk.0.attn_q.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("blk.0.ffn_up.weight", np.ones((4, 32), dtype=np.float16))
    q8 = gguf.quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("output.weight", q8, raw_shape=q8.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def _cut(src: Path, dst: Path, n: int) -> Path:
    dst.write_bytes(src.read_bytes()[:n])
    return dst


def test_whole_file_reads(tiny):
    s = reader.summarize(tiny)
    assert [t.name for t in s.tensors] == ["blk.0.attn_q.weight", "blk.0.ffn_up.weight", "output.weight"]
    assert s.metadata["tiny.block_count"] == 2


def _data_end(path: Path) -> int:
    last = gguf.GGUFReader(str(path)).tensors[-1]
    return int(last.data_offset + last.n_bytes)


def test_truncated_data_names_the_tensor(tiny, tmp_path):
    end = _data_end(tiny)
    cut = _cut(tiny, tmp_path / "cut.gguf", end - 5)
    with pytest.raises(GGUFError) as err:
        reader.summarize(cut)
    assert f"truncated at byte {end - 5}, tensor output.weight (needs byte {end})" in str(err.value)


def test_truncated_header_names_the_field(tiny, tmp_path):
    raw = tiny.read_bytes()
    key = raw.index(b"general.name")
    cut = _cut(tiny, tmp_path / "cut.gguf", key + 3)
    with pytest.raises(GGUFError, match=f"truncated at byte {key + 3} or corrupt: length of metadata key #3"):
        reader.open_reader(cut)


@pytest.mark.parametrize(
    "patch, needle",
    [
        (lambda b: b"GGUX" + b[4:], "bad magic"),
        (lambda b: b[:4] + struct.pack("<I", 9) + b[8:], "GGUF version 9"),
        (lambda b: b[:8] + struct.pack("<Q", 1 << 40) + b[16:], "the tensor count = 1099511627776 cannot fit"),
        (lambda b: b[:16] + struct.pack("<Q", 1 << 60) + b[24:], "the metadata key count"),
    ],
)
def test_corrupt_counts_are_named(tiny, tmp_path, patch, needle):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(patch(tiny.read_bytes()))
    with pytest.raises(GGUFError) as err:
        reader.open_reader(bad)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_misaligned_and_unknown_type_tensor_is_named(tiny, tmp_path):
    raw = bytearray(tiny.read_bytes())
    name = b"blk.0.ffn_up.weight"
    at = raw.index(name) + len(name) + 4 + 2 * 8  # past n_dims and two dims: the type, then the offset
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(raw[:at]) + struct.pack("<I", 77) + bytes(raw[at + 4 :]))
    with pytest.raises(GGUFError, match="tensor blk.0.ffn_up.weight: unknown GGML type 77"):
        reader.open_reader(bad)
    (offset,) = struct.unpack("<Q", raw[at + 4 : at + 12])
    bad.write_bytes(bytes(raw[: at + 4]) + struct.pack("<Q", offset + 3) + bytes(raw[at + 12 :]))
    with pytest.raises(GGUFError, match=f"tensor blk.0.ffn_up.weight: data offset {offset + 3} is not aligned"):
        reader.open_reader(bad)


def test_inspect_of_truncated_gguf_is_one_line_exit_2(tiny, tmp_path):
    cut = _cut(tiny, tmp_path / "cut.gguf", _data_end(tiny) - 5)
    env = {**os.environ, "COLUMNS": "400"}
    res = subprocess.run(
        [sys.executable, "-m", "omnimodel.cli", "inspect", str(cut)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "truncated" in lines[0] and "tensor output.weight" in lines[0], lines


def test_a_folder_or_a_missing_path_is_named(tmp_path):
    with pytest.raises(GGUFError, match="a folder, not a GGUF file"):
        reader.open_reader(tmp_path)
    with pytest.raises(GGUFError, match="no such file"):
        reader.open_reader(tmp_path / "nope.gguf")
