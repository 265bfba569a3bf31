"""Side files (action head, proprio projector): hostile pickles are refused in one line without torch's advice to
turn the check off; a benign legacy (non-zip) file loads; a truncated one names the file."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch

from omnimodel.archs.openvla_oft.checkpoint import read_state_dict
from omnimodel.errors import CheckpointError
from omnimodel.models import zoo


class Hostile:
    """Unpickling this runs a shell command (it must never be unpickled)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return zoo.make_checkpoint("openvla-oft-tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _copy(ckpt, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(ckpt, out)
    return out, next(out.glob("action_head--*")), next(out.glob("proprio_projector--*"))


WRITERS = {
    "zip": lambda path, obj: torch.save(obj, path),
    "legacy": lambda path, obj: torch.save(obj, path, _use_new_zipfile_serialization=False),
    "raw pickle": lambda path, obj: path.write_bytes(pickle.dumps(obj, protocol=4)),
}


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("side", ["action_head", "proprio_projector"])
def test_hostile_side_file_is_refused_in_one_line_with_the_right_advice(
    tiny_ckpt, tmp_path, capfd, fmt, side
):
    ckpt, head, proprio = _copy(tiny_ckpt, tmp_path)
    marker = tmp_path / "PWNED"
    target = head if side == "action_head" else proprio
    WRITERS[fmt](target, {"fc1.weight": Hostile(marker)})
    with pytest.raises(CheckpointError) as err:
        read_state_dict(ckpt)
    msg = str(err.value)
    assert not marker.exists(), "the pickle ran"
    assert (
        "\n" not in msg and msg.startswith(str(target)) and "refused by torch's weights-only loader" in msg
    ), msg
    assert "never load it with weights_only=False" in msg and "will likely succeed" not in msg, msg
    assert capfd.readouterr().err == "", "torch's warnings leaked onto the terminal"


def test_benign_legacy_side_file_loads(tiny_ckpt, tmp_path):
    ckpt, head, _ = _copy(tiny_ckpt, tmp_path)
    torch.save(torch.load(head, weights_only=True), head, _use_new_zipfile_serialization=False)
    got, want = read_state_dict(ckpt), read_state_dict(tiny_ckpt)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(
    "write, needle",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:500]), "cannot read (RuntimeError: PytorchStreamReader"),
        (lambda p: torch.save([torch.zeros(2)], p), "not a state dict of named tensors"),
        (lambda p: torch.save({"fc1.weight": 3}, p), "not a state dict of named tensors"),
    ],
)
def test_broken_side_file_names_the_file(tiny_ckpt, tmp_path, write, needle):
    ckpt, _, proprio = _copy(tiny_ckpt, tmp_path)
    write(proprio)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(ckpt)
    assert (
        "\n" not in str(err.value) and str(err.value).startswith(str(proprio)) and needle in str(err.value)
    ), str(err.value)
