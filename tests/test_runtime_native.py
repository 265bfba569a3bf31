"""The Python runtime (ctypes on the native library) against the C CLI and PyTorch, tiny preset."""

from __future__ import annotations

import numpy as np
import pytest
from test_codegen_native import cli, ggml_prefix, native_build, read_gguf, tiny_run  # noqa: F401

from omnimodel import runtime
from omnimodel.errors import OmniError


def test_runtime_matches_cli_and_pytorch(tiny_run):  # noqa: F811
    from omnimodel.analysis import SAMPLE_INSTRUCTION
    from omnimodel.archs.openvla_oft.policy import load_policy

    ref = read_gguf(tiny_run / "reference" / "end_to_end.gguf")
    images = [img.astype(np.uint8) for img in ref["images"]]
    with runtime.load(tiny_run, n_threads=2) as policy:
        native = policy.predict_action(images, ref["proprio"], SAMPLE_INSTRUCTION)
        assert np.array_equal(policy.prompt_ids(SAMPLE_INSTRUCTION), ref["token_ids"].reshape(-1))
    torch_policy = load_policy(__import__("json").loads((tiny_run / "port.json").read_text())["checkpoint"])
    torch_actions = torch_policy.predict_action(images, ref["proprio"], SAMPLE_INSTRUCTION)
    c_actions = np.asarray(cli(tiny_run / "build", "run", str(tiny_run / "model.gguf"), "--inputs",
                               str(tiny_run / "reference" / "end_to_end.gguf"), "--threads", "2")[-1]["actions"], np.float32)
    assert native.shape == (8, 7)
    assert np.abs(native - c_actions).max() <= 1e-6, "Python runtime and C CLI differ"
    err = float(np.abs(native - torch_actions).max())
    assert err <= 1e-4, f"runtime vs PyTorch action max abs error {err:.3g} > 1e-4"


def test_runtime_run_module_and_normalized(tiny_run):  # noqa: F811
    ref = read_gguf(tiny_run / "reference" / "projector.gguf")
    e2e = read_gguf(tiny_run / "reference" / "end_to_end.gguf")
    with runtime.load(tiny_run, n_threads=2) as policy:
        assert policy.has_module("projector") and not policy.has_module("projector.fc1")
        out = policy.run_module("projector", ref["in.0"])
        assert out.shape[-1] == ref["out"].shape[-1] and out.size == ref["out"].size
        assert np.abs(out.reshape(-1) - ref["out"].reshape(-1)).max() <= 1e-4
        norm = policy.predict_normalized(e2e["pixel_values"], e2e["token_ids"], e2e["proprio_norm"])
        assert np.abs(norm - e2e["actions_norm"].reshape(norm.shape)).max() <= 1e-4
        with pytest.raises(runtime.NativeError, match="no graph for module"):
            policy.run_module("vision_backbone.featurizer.blocks.0.mlp.fc1", ref["in.0"])


def test_runtime_errors_are_clear(tiny_run, tmp_path):  # noqa: F811
    with pytest.raises(OmniError, match="missing"):
        runtime.load(tmp_path)
    with pytest.raises(runtime.NativeError, match="not a readable GGUF"):
        runtime.NativePolicy(tiny_run / "build" / runtime.LIBRARY, tmp_path / "nope.gguf")
    with runtime.load(tiny_run, n_threads=1) as policy:
        img = np.zeros((policy.image_size, policy.image_size, 3), np.uint8)
        with pytest.raises(runtime.NativeError, match="proprio has 3 values"):
            policy.predict_ids([img, img], np.zeros(3, np.float32), np.array([1, 5], np.int32))
        with pytest.raises(runtime.NativeError, match="start with BOS"):
            policy.predict_ids([img, img], np.zeros(policy.proprio_dim, np.float32), np.array([5, 5], np.int32))
