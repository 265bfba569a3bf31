"""OpenVLA through the arch seam: registry, checkpoints told apart from OFT, 7B counts, the port at F32, native greedy tokens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from omnimodel import archs
from omnimodel.errors import CheckpointError

COS_F32 = 0.99999
N_SEEDS = 20
INSTRUCTIONS = ("put the black bowl on the plate", "pick up the cup", "Open The Top Drawer", "push the plate to the front")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # one logical line must not be wrapped by the terminal width
    return subprocess.run([sys.executable, "-m", "omnimodel.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=1500)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Our tiny checkpoints of both archs, and copies without `omnimodel_preset` (as the released repos ship)."""
    root = tmp_path_factory.mktemp("ckpts")
    out = {
        "openvla": archs.get("openvla").make_checkpoint("openvla-tiny", root / "openvla"),
        "openvla-oft": archs.get("openvla-oft").make_checkpoint("openvla-oft-tiny", root / "oft"),
    }
    for name in ("openvla", "openvla-oft"):
        released = root / f"{name}-released"
        shutil.copytree(out[name], released)
        cfg = json.loads((released / "config.json").read_text())
        cfg.pop("omnimodel_preset")
        (released / "config.json").write_text(json.dumps(cfg))
        out[f"{name}-released"] = released
    return out


def test_registry_finds_openvla():
    arch = archs.get("openvla")
    assert "openvla" in archs.names() and "openvla-oft" in archs.names()
    assert arch.bundled_preset == "openvla-tiny" and set(arch.presets()) == {"openvla", "openvla-tiny"}
    assert archs.for_preset("openvla-tiny") is arch and archs.for_preset("openvla-oft-tiny") is archs.get("openvla-oft")


def test_released_layout_norm_stats_inside_config_no_side_files(ckpts):
    ckpt = ckpts["openvla"]
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "openvla" and cfg["norm_stats"], "norm_stats must live in config.json"
    assert not any("checkpoint" in p.name for p in ckpt.iterdir()), "OpenVLA ships no side files"
    assert not (ckpt / "dataset_statistics.json").exists()
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    assert "language_model.lm_head.weight" in index and len(set(index.values())) > 1
    assert (ckpt / "tokenizer.json").exists()
    stats = next(iter(cfg["norm_stats"].values()))["action"]
    assert len(stats["q01"]) == 7 and len(stats["mask"]) == 7


@pytest.mark.parametrize("which", ["openvla", "openvla-oft", "openvla-released", "openvla-oft-released"])
def test_for_checkpoint_tells_the_two_apart(ckpts, which):
    expected = which.removesuffix("-released")
    assert archs.for_checkpoint(ckpts[which]).name == expected
    other = "openvla-oft" if expected == "openvla" else "openvla"
    assert archs.get(expected).claims(ckpts[which], json.loads((ckpts[which] / "config.json").read_text()))
    assert not archs.get(other).claims(ckpts[which], json.loads((ckpts[which] / "config.json").read_text()))
    with pytest.raises(CheckpointError, match=f"this is a {expected} checkpoint, not {other}; run `omnimodel port {expected}`"):
        archs.resolve(other, ckpts[which])


@pytest.mark.parametrize("asked, given", [("openvla", "openvla-oft"), ("openvla-oft", "openvla")])
def test_port_of_the_other_arch_says_which_it_is(ckpts, tmp_path, asked, given):
    run = tmp_path / "run"
    res = _cli("port", asked, "--checkpoint", str(ckpts[given]), "--out", str(run), cwd=tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and f"this is a {given} checkpoint, not {asked}" in lines[0], lines
    assert not run.exists()


def test_openvla_7b_counts_through_the_arch():
    info = archs.get("openvla").model_info("openvla")
    assert info.total == 7_541_237_184
    assert info.components == {"vision": 730_911_680, "projector": 71_385_600, "llm": 6_738_939_904}


def test_tiny_checkpoint_round_trips_the_reference(ckpts):
    from omnimodel.archs.openvla import zoo

    loaded = archs.get("openvla").load_model(ckpts["openvla"])
    built = zoo.build_random_model("openvla-tiny", 0)
    state = built.state_dict()
    assert set(loaded.state_dict()) == set(state)
    for k, v in loaded.state_dict().items():
        assert np.array_equal(v.numpy(), state[k].numpy()), k


def test_gguf_names_are_llama_cpp_and_refuse_oft_heads():
    arch = archs.get("openvla")
    assert arch.gguf_names("language_model.lm_head.weight") == ["output.weight"]
    assert arch.gguf_names("language_model.model.layers.3.self_attn.q_proj.weight") == ["blk.3.attn_q.weight"]
    assert arch.gguf_names("vision_backbone.fused_featurizer.blocks.0.attn.qkv.weight") == [
        "v2.blk.0.attn_q.weight", "v2.blk.0.attn_k.weight", "v2.blk.0.attn_v.weight"]
    assert arch.gguf_names("projector.fc1.weight") == ["mm.fc1.weight"]
    with pytest.raises(KeyError, match="action head"):
        arch.gguf_names("action_head.model.fc1.weight")


# ----------------------------------------------------------------------------- the port


@pytest.fixture(scope="module")
def ported(ckpts, tmp_path_factory) -> Path:
    from omnimodel.sandbox import get_sandbox

    try:
        get_sandbox("auto")
    except Exception as exc:  # noqa: BLE001 - no sandbox: the port cannot build
        require(False, f"a sandbox to build the generated C++ ({exc})")
    run = tmp_path_factory.mktemp("port") / "run"
    res = _cli("port", "openvla", "--checkpoint", str(ckpts["openvla"]), "--run-dir", str(run), cwd=run.parent)
    assert res.returncode == 0, res.stderr[-4000:]
    return run


def test_port_f32_every_module_at_parity(ported):
    validation = json.loads((ported / "validation.json").read_text())
    modules = {m["name"]: m for m in validation["modules"]}
    for want in ("vision_backbone.featurizer.blocks.0", "vision_backbone.fused_featurizer.blocks.0", "projector",
                 "language_model.model.layers.0", "language_model.model.layers.1", "language_model.model.norm",
                 "language_model.lm_head"):
        assert want in modules, f"{want} not validated ({sorted(modules)})"
    for name, m in modules.items():
        assert m["cosine"] is not None and m["cosine"] >= COS_F32, f"{name}: cosine {m['cosine']} < {COS_F32} (max abs err {m['max_abs_err']})"
    e2e = validation["end_to_end"]
    assert e2e["passed"] and e2e["action_norm_cosine"] >= COS_F32, e2e
    assert e2e["action_max_abs_err"] <= 1e-6, e2e
    plan = json.loads((ported / "plan.json").read_text())
    assert not plan["needs_llm"] and {u["skill"] for u in plan["units"]} >= {"lm_head_greedy", "llama_decoder_layer"}


def test_native_greedy_tokens_and_actions_equal_pytorch(ported, ckpts):
    from omnimodel import runtime
    from omnimodel.analysis import sample_observation
    from omnimodel.archs.openvla.model import tokens_to_actions
    from omnimodel.archs.openvla.policy import load_policy

    torch_policy = load_policy(ckpts["openvla"])
    distinct = set()
    with runtime.load(ported, n_threads=2) as native:
        assert (native.chunk, native.action_dim, native.proprio_dim, native.n_images) == (1, 7, 0, 1)
        for seed in range(N_SEEDS):
            images, _ = sample_observation(seed, 224, 0, torch_policy.stats, n_images=1)
            instruction = INSTRUCTIONS[seed % len(INSTRUCTIONS)]
            inputs = torch_policy.prepare(images, instruction)
            want = torch_policy.predict_tokens(inputs)
            got = native.run_module("action_tokens", inputs.pixel_values.numpy(), inputs.input_ids.numpy())
            assert np.array_equal(got.astype(np.int64), want), f"seed {seed}: native tokens {got.astype(int)} vs PyTorch {want}"
            norm = native.run_module("end_to_end", inputs.pixel_values.numpy(), inputs.input_ids.numpy())
            assert np.array_equal(norm, tokens_to_actions(want, torch_policy.cfg).astype(np.float32)), f"seed {seed}: bin centres differ"
            actions = native.predict_ids(images, np.zeros(0, np.float32), inputs.input_ids[0].numpy()).reshape(-1)
            ref = torch_policy.predict_action(images, instruction)
            # norm_stats are float32 in the GGUF, float64 in config.json: one float32 ulp apart at most
            np.testing.assert_allclose(actions, ref, rtol=2.5e-7, atol=1e-7, err_msg=f"seed {seed}: un-normalised actions")
            distinct.add(tuple(want.tolist()))
    assert len(distinct) >= 5, f"only {len(distinct)} distinct token sequences over {N_SEEDS} seeds: the check is too weak"


def test_unnorm_key_picks_a_dataset_of_several(ckpts, tmp_path):
    from omnimodel.archs.openvla.policy import load_policy
    from omnimodel.errors import ConfigError

    ckpt = tmp_path / "two"
    shutil.copytree(ckpts["openvla"], ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    (only,) = cfg["norm_stats"].values()
    other = json.loads(json.dumps(only))
    other["action"]["q99"] = [v + 1.0 for v in other["action"]["q99"]]
    cfg["norm_stats"] = {"bridge_orig": only, "fractal20220817_data": other}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="norm_stats hold 2 datasets .* pass unnorm_key"):
        load_policy(ckpt)
    with pytest.raises(ConfigError, match="unnorm_key 'libero' not in config.json norm_stats"):
        load_policy(ckpt, unnorm_key="libero")
    a = load_policy(ckpt, unnorm_key="bridge_orig")
    b = load_policy(ckpt, unnorm_key="fractal20220817_data")
    img = np.full((224, 224, 3), 128, np.uint8)
    da = a.predict_action(img, "pick up the cup")
    db = b.predict_action(img, "pick up the cup")
    mask = np.asarray(only["action"]["mask"], bool)
    assert np.all(db[mask] > da[mask]) and np.array_equal(db[~mask], da[~mask])
