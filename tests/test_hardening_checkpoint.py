"""Broken safetensors headers and hostile shard indexes give one CheckpointError line, never garbage weights."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import save_file

from omnimodel.archs.openvla_oft.checkpoint import INDEX_FILE, read_state_dict, read_weight_map
from omnimodel.errors import CheckpointError
from omnimodel.models import zoo
from omnimodel.models.safetensors_mmap import open_safetensors


def _shard(path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


GOOD = {
    "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]},
}


def _with(key, field, value):
    header = json.loads(json.dumps(GOOD))
    if value is None:
        header[key].pop(field)
    else:
        header[key][field] = value
    return header


HEADERS = {
    "negative offset": (_with("a", "data_offsets", [-16, 0]), "tensor a: data_offsets [-16, 0]"),
    "reversed offsets": (_with("a", "data_offsets", [16, 0]), "tensor a: data_offsets [16, 0]"),
    "shape vs bytes": (_with("a", "shape", [3, 2]), "tensor a: data_offsets span 16 bytes but shape [3, 2]"),
    "missing offsets": (_with("b", "data_offsets", None), "tensor b: data_offsets None"),
    "string offsets": (_with("b", "data_offsets", ["16", "24"]), "tensor b: data_offsets ['16', '24']"),
    "negative dim": (_with("b", "shape", [-4]), "tensor b: shape [-4]"),
    "unknown dtype": (_with("b", "dtype", "F7"), "tensor b: unsupported dtype 'F7'"),
    "entry not object": ({**GOOD, "b": [1]}, "tensor b: entry is not a JSON object"),
    "shifted by one byte": (
        {
            "a": {"dtype": "U8", "shape": [16], "data_offsets": [1, 17]},
            "b": {"dtype": "U8", "shape": [7], "data_offsets": [17, 24]},
        },
        "tensor a: data_offsets [1, 17] leaves a gap of 1 bytes",
    ),
    "overlap": (
        {
            "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
        },
        "tensor b: data_offsets [8, 24] overlaps the previous tensor",
    ),
    "header is a list": ([1, 2], "not a JSON object"),
}


@pytest.mark.parametrize("case", list(HEADERS))
def test_bad_shard_header_is_one_line_naming_the_tensor(tmp_path, case):
    header, needle = HEADERS[case]
    path = tmp_path / "model.safetensors"
    _shard(path, header, bytes(24))
    with pytest.raises(CheckpointError) as err:
        open_safetensors(path)
    msg = str(err.value)
    assert "\n" not in msg and needle in msg and msg.startswith(str(path)), msg


def test_trailing_or_missing_bytes_are_refused_and_good_shards_load(tmp_path):
    path = tmp_path / "s.safetensors"
    _shard(path, GOOD, bytes(25))
    with pytest.raises(CheckpointError, match="tensor data ends at byte .* but the file has"):
        open_safetensors(path)
    _shard(path, GOOD, bytes(23))
    with pytest.raises(CheckpointError, match="truncated at byte .*, tensor b needs bytes up to"):
        open_safetensors(path)
    tensors = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "e": torch.zeros(0, 3), "y": torch.ones(5, dtype=torch.int64)}
    save_file(tensors, str(path), metadata={"format": "pt"})
    loaded = open_safetensors(path)
    assert set(loaded) == set(tensors)
    for k, t in tensors.items():
        assert torch.equal(loaded[k], t), k


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return zoo.make_checkpoint("openvla-oft-tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _with_index(ckpt, tmp_path, edit):
    out = tmp_path / "ckpt"
    shutil.copytree(ckpt, out)
    index = json.loads((out / INDEX_FILE).read_text())
    edit(out, index)
    (out / INDEX_FILE).write_text(json.dumps(index))
    return out


def _point_first(target):
    def edit(out, index):
        key = next(iter(index["weight_map"]))
        index["weight_map"][key] = target(out) if callable(target) else target

    return edit


def _symlink_out(out):
    outside = out.parent / "outside.safetensors"
    first = sorted(out.glob("model-*.safetensors"))[0]
    shutil.copy(first, outside)
    (out / "link.safetensors").symlink_to(outside)
    return "link.safetensors"


INDEXES = {
    "dotdot": (_point_first("../model-00001-of-00005.safetensors"), "leaves the checkpoint directory"),
    "absolute": (_point_first("/etc/passwd"), "leaves the checkpoint directory"),
    "symlink out": (_point_first(_symlink_out), "outside the checkpoint directory"),
    "non-string shard": (_point_first(5), "is not a shard file name"),
    "weight_map list": (lambda out, index: index.__setitem__("weight_map", ["a"]), "no weight_map object"),
    "no weight_map": (lambda out, index: index.pop("weight_map"), "no weight_map object"),
}


@pytest.mark.parametrize("case", list(INDEXES))
def test_hostile_shard_index_is_refused(tiny_ckpt, tmp_path, case):
    edit, needle = INDEXES[case]
    ckpt = _with_index(tiny_ckpt, tmp_path, edit)
    for read in (read_weight_map, read_state_dict):
        with pytest.raises(CheckpointError) as err:
            read(ckpt)
        assert "\n" not in str(err.value) and needle in str(err.value), str(err.value)


def test_symlink_inside_the_checkpoint_is_allowed(tiny_ckpt, tmp_path):
    def edit(out, index):
        first = sorted(out.glob("model-*.safetensors"))[0]
        (out / "alias.safetensors").symlink_to(first.name)
        for k, v in index["weight_map"].items():
            if v == first.name:
                index["weight_map"][k] = "alias.safetensors"

    ckpt = _with_index(tiny_ckpt, tmp_path, edit)
    assert set(read_state_dict(ckpt)) == set(read_state_dict(tiny_ckpt))
