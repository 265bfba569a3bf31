"""Foundation: the OpenVLA-OFT reference model, its presets, checkpoint layout and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from omnimodel.archs.openvla_oft.model import OpenVLAOFT, preset
from omnimodel.errors import CheckpointError, ConfigError
from omnimodel.models import load, zoo

# Published figures (shared/specs/vla-architectures.md, "Sizes").
PUBLISHED = {
    "vision": 303_230_976 + 427_680_704,
    "projector": 71_385_600,
    "llm": 6_738_939_904,
    "action_head": 151_117_831,
    "proprio_projector": 16_818_176,
}

# Key-name patterns of the released checkpoint (spec, "Checkpoint layout").
KEY_PATTERNS = [
    r"vision_backbone\.featurizer\.(cls_token|reg_token|pos_embed)",
    r"vision_backbone\.featurizer\.patch_embed\.proj\.(weight|bias)",
    r"vision_backbone\.featurizer\.blocks\.\d+\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
    r"vision_backbone\.featurizer\.blocks\.\d+\.ls[12]\.scale_factor",
    r"vision_backbone\.featurizer\.norm\.(weight|bias)",
    r"vision_backbone\.fused_featurizer\.(pos_embed)",
    r"vision_backbone\.fused_featurizer\.patch_embed\.proj\.(weight|bias)",
    r"vision_backbone\.fused_featurizer\.blocks\.\d+\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
    r"vision_backbone\.fused_featurizer\.norm\.(weight|bias)",
    r"vision_backbone\.fused_featurizer\.attn_pool\..+",
    r"projector\.fc[123]\.(weight|bias)",
    r"language_model\.model\.embed_tokens\.weight",
    r"language_model\.model\.layers\.\d+\.self_attn\.[qkvo]_proj\.weight",
    r"language_model\.model\.layers\.\d+\.mlp\.(gate|up|down)_proj\.weight",
    r"language_model\.model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight",
    r"language_model\.model\.norm\.weight",
    r"language_model\.lm_head\.weight",
]
SIDE_PATTERNS = {
    "action_head": r"module\.model\.(layer_norm1|fc1|layer_norm2|fc2|mlp_resnet_blocks\.[01]\.ffn\.[01])\.(weight|bias)",
    "proprio_projector": r"module\.fc[12]\.(weight|bias)",
}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return zoo.make_checkpoint("openvla-oft-tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _obs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)], rng.uniform(-0.5, 0.5, 8)


def test_7b_preset_counts_match_published_figures():
    info = zoo.info("openvla-oft")
    for comp, published in PUBLISHED.items():
        got = info.components[comp]
        assert abs(got - published) / published <= 0.005, f"{comp}: {got} vs published {published}"


def test_tiny_preset_keeps_structure_and_kquant_sizes():
    cfg = preset("openvla-oft-tiny")
    assert cfg.dino.n_registers == 4 and cfg.dino.class_token and cfg.dino.layer_scale
    assert not cfg.siglip.layer_scale and cfg.num_images == 2 and cfg.chunk == 8 and cfg.proprio_dim == 8
    for size in (cfg.hidden, cfg.mlp, cfg.dino.width, cfg.siglip.width, cfg.dino.mlp, cfg.siglip.mlp):
        assert size % 256 == 0, size
    total = zoo.info("openvla-oft-tiny").total
    assert 1_000_000 < total < 20_000_000


def test_checkpoint_layout_matches_release(tiny_ckpt):
    index = json.loads((tiny_ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", s) for s in shards)
    for key in index["weight_map"]:
        assert any(re.fullmatch(p, key) for p in KEY_PATTERNS), f"unexpected key {key}"
    for pattern in KEY_PATTERNS:
        assert any(re.fullmatch(pattern, k) for k in index["weight_map"]), f"no key for {pattern}"
    for comp, pattern in SIDE_PATTERNS.items():
        (path,) = [p for p in tiny_ckpt.iterdir() if comp in p.name and "checkpoint" in p.name]
        keys = list(torch.load(path, weights_only=True))
        assert keys and all(re.fullmatch(pattern, k) for k in keys), keys
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    assert cfg["model_type"] == "openvla" and cfg["architectures"] == ["OpenVLAForActionPrediction"]
    stats = json.loads((tiny_ckpt / "dataset_statistics.json").read_text())
    (entry,) = stats.values()
    assert entry["action"]["mask"] == [True] * 6 + [False] and len(entry["proprio"]["q99"]) == 8


def test_readback_is_bit_identical(tiny_ckpt):
    model = zoo.build_random_model("openvla-oft-tiny", seed=0)
    policy = load(tiny_ckpt)
    images, proprio = _obs()
    inputs = policy.prepare(images, proprio, "put the red cube in the bowl")
    with torch.no_grad():
        ref = model(inputs.pixel_values, inputs.input_ids, inputs.proprio).actions[0].numpy()
    assert np.array_equal(ref, policy.predict_normalized(inputs))


def test_forward_is_deterministic_and_unnormalised(tiny_ckpt):
    policy = load(tiny_ckpt)
    images, proprio = _obs(1)
    a = policy.predict_action(images, proprio, "pick up the blue cylinder")
    b = policy.predict_action(images, proprio, "pick up the blue cylinder")
    assert a.shape == (8, 7) and np.array_equal(a, b)
    norm = policy.predict_normalized(policy.prepare(images, proprio, "pick up the blue cylinder"))
    q01 = np.array(policy.stats["action"]["q01"])
    q99 = np.array(policy.stats["action"]["q99"])
    np.testing.assert_allclose(a[:, :6], 0.5 * (norm[:, :6] + 1) * (q99[:6] - q01[:6] + 1e-8) + q01[:6], rtol=1e-5)
    np.testing.assert_array_equal(a[:, 6], norm[:, 6])  # gripper passes through (mask false)


def test_trunk_attends_bidirectionally():
    model = OpenVLAOFT(preset("openvla-oft-tiny")).eval()
    x = torch.randn(1, 20, model.cfg.hidden)
    mask = torch.zeros(1, 1, 20, 20)
    with torch.no_grad():
        h1 = model.language_model.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        x2 = x.clone()
        x2[0, -1] += 1.0
        h2 = model.language_model.model(inputs_embeds=x2, attention_mask=mask).last_hidden_state
    assert (h1[0, 0] - h2[0, 0]).abs().max() > 1e-4, "the first position must see the last (no causal mask)"
    assert model.language_model.config.rms_norm_eps == 1e-6


def test_action_head_reads_one_before_each_placeholder(tiny_ckpt):
    policy = load(tiny_ckpt)
    images, proprio = _obs(2)
    inputs = policy.prepare(images, proprio, "open the drawer")
    model = policy.model
    captured = {}
    handle = model.action_head.register_forward_hook(lambda m, i, o: captured.setdefault("rows", i[0]))
    with torch.no_grad():
        x = model.multimodal_embeddings(inputs.pixel_values, inputs.input_ids, inputs.proprio)
        mask = torch.zeros(1, 1, x.shape[1], x.shape[1])
        hidden = model.language_model.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        model(inputs.pixel_values, inputs.input_ids, inputs.proprio)
    handle.remove()
    n_prompt = inputs.input_ids.shape[1] - 1
    first_placeholder = 1 + model.cfg.n_patch_tokens + n_prompt
    assert x.shape[1] == first_placeholder + 56 + 1
    assert torch.count_nonzero(x[0, first_placeholder : first_placeholder + 56]) == 0
    assert torch.count_nonzero(x[0, -1]) > 0  # the stop token is not zeroed
    torch.testing.assert_close(captured["rows"][0], hidden[0, first_placeholder - 1 : first_placeholder + 55])


def test_prompt_format_and_space_token(tiny_ckpt):
    policy = load(tiny_ckpt)
    ids = policy.prepare(*_obs(), "Pick Up The Cube").input_ids[0].tolist()
    assert ids[0] == 1 and ids[-1] == policy.tokenizer.token_to_id("\u2581")
    text = policy.tokenizer.decode(ids[1:-1])
    assert text == "In: What action should the robot take to pick up the cube?\nOut:"


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_shard(tiny_ckpt, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path / "c")
    (ckpt / "model-00002-of-00005.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00005\.safetensors: shard missing"):
        load(ckpt)


def test_missing_action_head(tiny_ckpt, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path / "c")
    (ckpt / "action_head--latest_checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match="no action_head--<step>_checkpoint.pt"):
        load(ckpt)


def test_config_with_wrong_sizes(tiny_ckpt, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path / "c")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] = 1024
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.gate_proj\.weight has shape .* config\.json implies"):
        load(ckpt)


def test_truncated_safetensors(tiny_ckpt, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path / "c")
    shard = ckpt / "model-00003-of-00005.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model-00003-of-00005\.safetensors: truncated"):
        load(ckpt)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("openvla-oft-huge")


def test_cli_errors_are_one_line_and_zoo_make_is_atomic(tmp_path, monkeypatch):
    res = subprocess.run(
        [sys.executable, "-m", "omnimodel.cli", "zoo", "info", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert res.returncode != 0 and res.stderr.strip().count("\n") == 0 and "unknown preset" in res.stderr

    from omnimodel.archs.openvla_oft import checkpoint

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        zoo.make_checkpoint("openvla-oft-tiny", tmp_path / "out", seed=0)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_zoo_info_json_cli(tiny_ckpt):
    res = subprocess.run(
        [sys.executable, "-m", "omnimodel.cli", "zoo", "info", str(tiny_ckpt), "--json"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert set(data["components"]) == set(PUBLISHED) and data["total"] == sum(data["components"].values())
