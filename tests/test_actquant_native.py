"""An actquant GGUF of the tiny preset runs through the native build and matches the plugin's own
dequantised PyTorch simulation (action cosine >= 0.999)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_codegen_native import ggml_prefix, native_build, read_gguf, tiny_run  # noqa: F401

from omnimodel import runtime


@pytest.mark.parametrize("bpw", [3.0, 2.0], ids=["3.0bpw", "2.0bpw-iq1"])
def test_actquant_gguf_native_matches_simulation(tiny_run, tmp_path, bpw):  # noqa: F811
    from actquant_plugin.quantize import quantize
    from omnimodel.archs.openvla_oft.checkpoint import load_model
    from omnimodel.quant_sim import simulate
    from omnimodel.suite import suite_tasks
    from omnimodel.suite.export import export_task

    demos = tmp_path / "demos"
    for idx in (0, 4):
        task = suite_tasks("libero_goal")[idx]
        export_task(task, idx, demos / "libero_goal" / f"{task.name}_demo.hdf5", episodes=1, seed=2)
    ckpt = json.loads((tiny_run / "port.json").read_text())["checkpoint"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "build").symlink_to(tiny_run / "build")
    (run / "port.json").write_text((tiny_run / "port.json").read_text())
    torch.set_num_threads(1)
    res = quantize(ckpt, "actquant", run / "model.gguf", bpw=bpw, calib=demos, calib_frames=8)
    assert abs(res.convert.bpw - bpw) <= 0.02
    if bpw < 2.0625:  # below IQ2_XXS: the ternary IQ1 types are in the mix and GGML's kernels run them
        assert {"IQ1_S", "IQ1_M"} & set(res.convert.types.values()), sorted(set(res.convert.types.values()))
    assert json.loads(res.report_path.read_text())["gguf"]["bpw"] == res.convert.bpw

    e2e = read_gguf(tiny_run / "reference" / "end_to_end.gguf")
    with runtime.load(run, n_threads=2) as policy:
        native = policy.predict_normalized(e2e["pixel_values"], e2e["token_ids"], e2e["proprio_norm"])
    model = simulate(load_model(ckpt).eval(), run / "model.gguf")
    with torch.no_grad():
        ids = torch.from_numpy(np.asarray(e2e["token_ids"], np.int64).reshape(1, -1))
        px = torch.from_numpy(np.asarray(e2e["pixel_values"], np.float32).reshape(1, -1, 224, 224))
        prop = torch.from_numpy(np.asarray(e2e["proprio_norm"], np.float32).reshape(1, -1))
        sim = model(px, ids, prop).actions[0].numpy()
    a, b = native.reshape(-1).astype(np.float64), sim.reshape(-1).astype(np.float64)
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    print(f"actquant {bpw} bpw: native vs simulation action cosine {cos:.6f}, max abs {np.abs(a - b).max():.3g}")
    assert cos >= 0.999, f"action cosine {cos:.6f} < 0.999 (max abs err {np.abs(a - b).max():.3g})"
