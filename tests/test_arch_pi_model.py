"""π0 / π0.5 PyTorch side: presets, checkpoint layouts, the KV-cached denoise step, spec pitfalls, bad input.

Tiny presets in fp32, batch 1; the full-size presets are only counted (meta device).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from omnimodel import archs
from omnimodel.archs.pi0 import checkpoint as ck
from omnimodel.archs.pi0 import zoo
from omnimodel.archs.pi0.model import (
    PI0,
    PRESETS,
    AdaRMSNorm,
    RMSNorm,
    apply_rope,
    count_parameters,
    make_attn_mask,
    rope_cos_sin,
    sinusoidal_time_embedding,
)
from omnimodel.archs.pi0.tokenizer import BOS_ID, build_char_tokenizer, discretize_state, tokenize_prompt
from omnimodel.errors import CheckpointError, ConfigError

TINY = ("pi05-tiny", "pi0-tiny")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory) -> dict[str, Path]:
    """Both tiny presets written once by `zoo make` (LeRobot layout)."""
    root = tmp_path_factory.mktemp("pi")
    return {p: archs.for_preset(p).make_checkpoint(p, root / p) for p in TINY}


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, PI0]:
    return {p: zoo.build_random_model(p) for p in TINY}


def _inputs(cfg, seed: int = 0, text_len: int = 9, b: int = 1):
    """One observation: 2 real cameras + a masked third, text padded after `text_len`, a state."""
    g = torch.Generator().manual_seed(seed)
    size = cfg.vision.image
    images = [torch.rand(b, 3, size, size, generator=g) * 2 - 1 for _ in range(cfg.num_cameras)]
    masks = [torch.ones(b, dtype=torch.bool) for _ in range(cfg.num_cameras - 1)] + [
        torch.zeros(b, dtype=torch.bool)
    ]
    tokens = torch.randint(4, cfg.vocab, (b, cfg.max_token_len), generator=g)
    token_mask = torch.arange(cfg.max_token_len)[None].expand(b, -1) < text_len
    tokens = torch.where(token_mask, tokens, torch.zeros_like(tokens))
    state = torch.randn(b, cfg.state_dim, generator=g)
    noise = torch.randn(b, cfg.chunk, cfg.action_dim, generator=g)
    return images, masks, tokens, token_mask, state, noise


# ----------------------------------------------------------------------------- sizes and names


def test_full_size_parameter_counts_match_spec():
    """spec §3: π0 3,238,048,528 and π0.5 3,353,433,872 without the dead expert lm_head."""
    pi0, pi05 = count_parameters(PRESETS["pi0"]), count_parameters(PRESETS["pi05"])
    assert sum(pi0.values()) == 3_238_048_528
    assert sum(pi05.values()) == 3_353_433_872
    assert pi0["vision"] == pi05["vision"] == 412_442_352
    assert pi0["projector"] == 2_361_344
    assert pi0["llm"] == 2_508_531_712
    assert pi0["expert"] == 311_464_960 and pi05["expert"] == 427_932_672
    assert pi0["projections"] == 3_248_160 and pi05["projections"] == 2_165_792


def test_tiny_presets_have_the_agreed_sizes():
    for name in TINY:
        cfg = PRESETS[name]
        v, llm, ex = cfg.vision, cfg.llm, cfg.expert
        assert (v.width, v.depth, v.heads, v.mlp, v.patch, v.image, v.n_patches) == (
            256,
            2,
            4,
            512,
            14,
            224,
            256,
        )
        assert (llm.width, llm.depth, llm.heads, llm.kv_heads, llm.head_dim, llm.mlp) == (
            512,
            3,
            8,
            1,
            64,
            1024,
        )
        assert (ex.width, ex.depth, ex.heads, ex.kv_heads, ex.head_dim, ex.mlp) == (256, 3, 8, 1, 64, 512)
        assert (cfg.vocab, cfg.action_dim, cfg.num_cameras) == (1024, 32, 3)
    assert (
        PRESETS["pi05-tiny"].chunk,
        PRESETS["pi05-tiny"].max_token_len,
        PRESETS["pi05-tiny"].norm_mode,
    ) == (10, 200, "quantile")
    assert (PRESETS["pi0-tiny"].chunk, PRESETS["pi0-tiny"].max_token_len, PRESETS["pi0-tiny"].norm_mode) == (
        50,
        48,
        "mean_std",
    )


def test_parameter_names_are_openpi_state_dict_keys():
    with torch.device("meta"):
        pi05, pi0 = PI0(PRESETS["pi05-tiny"]), PI0(PRESETS["pi0-tiny"])
    k05, k0 = set(pi05.state_dict()), set(pi0.state_dict())
    pwe = "paligemma_with_expert."
    for key in (
        pwe + "paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight",
        pwe + "paligemma.model.vision_tower.vision_model.embeddings.position_embedding.weight",
        pwe + "paligemma.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
        pwe + "paligemma.model.vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias",
        pwe + "paligemma.model.vision_tower.vision_model.post_layernorm.weight",
        pwe + "paligemma.model.multi_modal_projector.linear.weight",
        pwe + "paligemma.model.language_model.embed_tokens.weight",
        pwe + "paligemma.model.language_model.layers.0.self_attn.q_proj.weight",
        pwe + "paligemma.model.language_model.layers.2.mlp.gate_proj.weight",
        pwe + "paligemma.model.language_model.layers.0.input_layernorm.weight",
        pwe + "paligemma.model.language_model.norm.weight",
        pwe + "gemma_expert.model.layers.0.self_attn.o_proj.weight",
        "action_in_proj.weight",
        "action_out_proj.bias",
    ):
        assert key in k05 and key in k0, key
    assert pwe + "gemma_expert.model.layers.0.input_layernorm.dense.weight" in k05
    assert pwe + "gemma_expert.model.norm.dense.bias" in k05
    assert {"time_mlp_in.weight", "time_mlp_out.bias"} <= k05
    assert pwe + "gemma_expert.model.layers.0.post_attention_layernorm.weight" in k0
    assert {"state_proj.weight", "action_time_mlp_in.weight", "action_time_mlp_out.bias"} <= k0
    assert not any("lm_head" in k or "state_proj" in k for k in k05)
    assert not any("lm_head" in k or k.startswith("time_mlp") for k in k0)
    assert pi0.state_dict()["action_time_mlp_in.weight"].shape == (256, 512)  # [action_emb, time_emb] 2D -> D


# ----------------------------------------------------------------------------- checkpoints


def test_tiny_checkpoint_round_trip(tiny_ckpts, tiny_models):
    for name, path in tiny_ckpts.items():
        arch = archs.for_checkpoint(path)
        assert arch.name == ("pi05" if name == "pi05-tiny" else "pi0")
        model = arch.load_model(path)
        ref = tiny_models[name]
        a, b = model.state_dict(), ref.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        images, masks, tokens, tmask, state, noise = _inputs(model.cfg)
        t = torch.full((1,), 0.4)
        with torch.no_grad():
            assert torch.equal(
                model.joint_velocity(images, masks, tokens, tmask, state, noise, t),
                ref.joint_velocity(images, masks, tokens, tmask, state, noise, t),
            )


def test_written_layout_is_lerobots(tiny_ckpts):
    path = tiny_ckpts["pi05-tiny"]
    keys = set(load_file(str(path / "model.safetensors")))
    assert all(k.startswith("model.") for k in keys)
    # LeRobot 0.6.1 stores the tied table under both names
    assert "model.paligemma_with_expert.paligemma.lm_head.weight" in keys
    assert "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight" in keys
    assert "model.paligemma_with_expert.gemma_expert.lm_head.weight" in keys  # LeRobot's strict load wants it
    raw = json.loads((path / "config.json").read_text())
    assert raw["type"] == "pi05" and raw["chunk_size"] == 10 and raw["tokenizer_max_length"] == 200
    assert raw["empty_cameras"] == 1 and raw["normalization_mapping"]["ACTION"] == "QUANTILES"
    # config.json holds LeRobot's fields only (it refuses others); our entries sit in omnimodel.json
    assert not [k for k in raw if k.startswith("omnimodel")], sorted(raw)
    side = json.loads((path / "omnimodel.json").read_text())
    assert side["omnimodel_preset"] == "pi05-tiny" and side["omnimodel_sizes"]["llm"]["width"] == 512
    pre = json.loads((path / "policy_preprocessor.json").read_text())
    state_file = next(s["state_file"] for s in pre["steps"] if s["registry_name"] == "normalizer_processor")
    stats = load_file(str(path / state_file))
    assert {"observation.state.q01", "action.q99", "observation.state.mean"} <= set(stats)
    raw0 = json.loads((tiny_ckpts["pi0-tiny"] / "config.json").read_text())
    assert raw0["type"] == "pi0" and raw0["normalization_mapping"]["STATE"] == "MEAN_STD"


def _openpi_copy(model: PI0, out: Path) -> Path:
    out.mkdir()
    ck.write_openpi_checkpoint(model, out, zoo.random_stats(0))
    # openpi fetches its SentencePiece model separately; the user drops a tokenizer.json beside the weights
    build_char_tokenizer(model.cfg.vocab).save(str(out / "tokenizer.json"))
    return out


def test_openpi_layout_reads_untouched(tmp_path, tiny_models):
    for name, model in tiny_models.items():
        path = _openpi_copy(model, tmp_path / name)
        arch = archs.for_checkpoint(path)
        assert arch.pi05 == model.cfg.pi05  # told apart by the weights: openpi's config.json does not say
        loaded = arch.load_model(path)
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
        spec = arch.load_policy(path).spec
        assert spec.origin == "openpi" and spec.eps == 1e-6
        if model.cfg.pi05:  # pi05_libero: no state at all, π0 prompt
            assert not spec.state_in_prompt and not spec.state_token and spec.state_mode == "quantile"
        else:  # pi0_libero: delta actions on dims 0..5
            assert spec.delta_mask == (True,) * 6 + (False,)


def test_older_spellings_and_embedding_under_lm_head(tmp_path, tiny_ckpts, tiny_models):
    src = tiny_ckpts["pi0-tiny"]
    path = tmp_path / "old"
    shutil.copytree(src, path)
    tensors = load_file(str(path / "model.safetensors"))
    renamed = {}
    for k, v in tensors.items():
        k = k.removeprefix("model.")  # an openpi conversion on the Hub: no prefix
        k = k.replace("paligemma.model.vision_tower.", "paligemma.vision_tower.")
        k = k.replace("paligemma.model.multi_modal_projector.", "paligemma.multi_modal_projector.")
        k = k.replace(
            "vision_tower.vision_model.encoder.layers.1.", "vision_tower.encoder.layers.1."
        )  # transformers >= 5.6
        renamed[k] = v
    renamed["normalize_inputs.buffer_observation_state.mean"] = torch.zeros(8)  # older buffers are skipped
    embed = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    del renamed[embed]  # the table only under paligemma.lm_head.weight (pitfall 20)
    save_file(renamed, str(path / "model.safetensors"))
    loaded = archs.get("pi0").load_model(path)
    for k, v in tiny_models["pi0-tiny"].state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    renamed[embed] = torch.zeros_like(renamed["paligemma_with_expert.paligemma.lm_head.weight"])
    save_file(renamed, str(path / "model.safetensors"))  # a stale embed_tokens: lm_head wins, as in LeRobot
    assert torch.equal(
        archs.get("pi0").load_model(path).state_dict()[embed], tiny_models["pi0-tiny"].state_dict()[embed]
    )


def test_legacy_stats_buffers(tmp_path, tiny_ckpts):
    path = tmp_path / "legacy"
    shutil.copytree(tiny_ckpts["pi0-tiny"], path)
    for f in path.glob("policy_*"):
        f.unlink()
    tensors = load_file(str(path / "model.safetensors"))
    tensors["normalize_inputs.buffer_observation_state.mean"] = torch.arange(8.0)
    tensors["normalize_inputs.buffer_observation_state.std"] = torch.ones(8)
    tensors["unnormalize_outputs.buffer_action.mean"] = torch.arange(7.0)
    tensors["unnormalize_outputs.buffer_action.std"] = torch.full((7,), 2.0)
    save_file(tensors, str(path / "model.safetensors"))
    stats = ck.read_stats(path).to_dict()
    assert stats["state"]["mean"] == list(range(8)) and stats["action"]["std"] == [2.0] * 7


# ----------------------------------------------------------------------------- KV cache and the loop


@pytest.mark.parametrize("name", TINY)
def test_cached_denoise_step_equals_joint_forward(tiny_models, name):
    """Prefix K/V cached once then the suffix alone == prefix + suffix in one attention (1e-5)."""
    model = tiny_models[name]
    images, masks, tokens, tmask, state, noise = _inputs(model.cfg, seed=1)
    t = torch.full((1,), 0.7)
    with torch.no_grad():
        cache = model.prefix_pass(images, masks, tokens, tmask)
        cached = model.denoise_step(cache, state, noise, t)
        joint = model.joint_velocity(images, masks, tokens, tmask, state, noise, t)
        again = model.denoise_step(cache, state, noise, t)  # the cache is read-only across steps
    err = (cached - joint).abs().max().item()
    assert err < 1e-5, f"{name} denoise_step vs joint forward: max abs err {err:.3g} (threshold 1e-5)"
    assert torch.equal(cached, again)
    assert cached.abs().mean() > 1e-3


def test_euler_from_t1_to_t0_in_ten_steps(tiny_models):
    model = tiny_models["pi05-tiny"]
    images, masks, tokens, tmask, state, noise = _inputs(model.cfg)
    seen = []

    def constant_velocity(cache, st, x, t):
        seen.append(float(t[0]))
        return torch.ones_like(x)

    model.denoise_step = constant_velocity  # instance attribute: this model only
    try:
        out = model.sample_actions(images, masks, tokens, tmask, None, noise)
    finally:
        del model.denoise_step
    assert np.allclose(seen, [1.0 - 0.1 * s for s in range(10)], atol=1e-7)
    assert torch.allclose(out, noise - 1.0, atol=1e-6)  # x <- x + dt*v with dt = -0.1, ten times


# ----------------------------------------------------------------------------- pitfalls


def test_mask_patterns():
    # π0 suffix after a 3-token prefix with one padded token: [p p p(pad) | state a a a]
    pad = torch.tensor([[True, True, False, True, True, True, True]])
    ar = torch.tensor([[0, 0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    m = make_attn_mask(pad, ar)[0]
    assert m[:2, :2].all() and not m[:2, 3:].any()  # prefix bidirectional, never sees the suffix
    assert not m[:, 2].any() and not m[2].any()  # padding neither sees nor is seen
    assert m[3, :2].all() and m[3, 3] and not m[3, 4:].any()  # state: prefix + itself only
    assert m[4:, :2].all() and m[4:, 3:].all()  # actions: prefix, state, all actions (bidirectional)
    # π0.5: ar [1, 0, 0]: the action block is bidirectional
    m5 = make_attn_mask(
        torch.ones(1, 5, dtype=torch.bool), torch.tensor([[0, 0, 1, 0, 0]], dtype=torch.bool)
    )[0]
    assert m5[2:].all() and not m5[:2, 2:].any()


def test_suffix_ar_masks(tiny_models):
    for model in tiny_models.values():
        x = torch.zeros(1, model.cfg.chunk, model.cfg.action_dim)
        _, pad, ar, cond = model.embed_suffix(torch.zeros(1, model.cfg.state_dim), x, torch.ones(1))
        want = [1] + [0] * (model.cfg.chunk - 1) if model.cfg.pi05 else [1, 1] + [0] * (model.cfg.chunk - 1)
        assert ar[0].long().tolist() == want and pad.all()
        assert (cond is not None) == model.cfg.pi05


def test_sqrt_width_scales_text_only(tiny_models):
    model = tiny_models["pi0-tiny"]
    images, masks, tokens, tmask, _, _ = _inputs(model.cfg)
    emb, pad, ar = model.embed_prefix(images, masks, tokens, tmask)
    n = model.cfg.vision.n_patches
    table = model.llm.embed_tokens.weight
    assert torch.equal(emb[:, -model.cfg.max_token_len :], table[tokens] * math.sqrt(512))
    assert torch.allclose(emb[:, :n], model.embed_image(images[0]), atol=0)  # images: no factor
    assert not ar.any() and pad[0, : 2 * n].all() and not pad[0, 2 * n : 3 * n].any()


def test_rope_is_split_halves_not_interleaved():
    x = torch.randn(1, 1, 3, 8)
    pos = torch.tensor([[0, 1, 5]])
    cos, sin = rope_cos_sin(pos, 8, 10_000.0)
    out = apply_rope(x, cos, sin)
    assert torch.allclose(out[..., 0, :], x[..., 0, :])  # position 0: identity
    freqs = 1.0 / 10_000.0 ** (torch.arange(0, 8, 2).float() / 8)
    ang = pos[0, 2] * freqs
    x1, x2 = x[0, 0, 2, :4], x[0, 0, 2, 4:]
    halves = torch.cat([x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()])
    assert torch.allclose(out[0, 0, 2], halves, atol=1e-6)
    ev, od = x[0, 0, 2, 0::2], x[0, 0, 2, 1::2]
    inter = torch.stack([ev * ang.cos() - od * ang.sin(), od * ang.cos() + ev * ang.sin()], -1).flatten()
    assert (out[0, 0, 2] - inter).abs().max() > 1e-3


def test_norms_and_time_embedding():
    x = torch.randn(2, 3, 6)
    rms = RMSNorm(6)
    with torch.no_grad():
        rms.weight.normal_()
    normed = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(rms(x)[0], normed * (1 + rms.weight), atol=1e-6)  # (1 + w)
    ada = AdaRMSNorm(6, 4)
    cond = torch.randn(2, 4)
    out, gate = ada(x, cond)
    scale, shift, g = ada.dense(cond)[:, None].chunk(3, -1)  # order: scale, shift, gate
    assert torch.allclose(out, normed * (1 + scale) + shift, atol=1e-6) and torch.equal(gate, g)
    emb = sinusoidal_time_embedding(torch.tensor([1.0]), 8, 4e-3, 4.0)
    periods = 4e-3 * (4.0 / 4e-3) ** (np.arange(4) / 3)
    assert np.allclose(emb[0, :4].numpy(), np.sin(2 * np.pi / periods), atol=1e-6)  # sin first
    assert np.allclose(emb[0, 4:].numpy(), np.cos(2 * np.pi / periods), atol=1e-6)


def test_pi05_time_conditions_every_expert_norm(tiny_models):
    """π0.5: the action tokens carry no time; changing t changes v only through adaRMS."""
    model = tiny_models["pi05-tiny"]
    images, masks, tokens, tmask, _, noise = _inputs(model.cfg)
    emb1, *_ = model.embed_suffix(None, noise, torch.full((1,), 1.0))
    emb2, *_ = model.embed_suffix(None, noise, torch.full((1,), 0.3))
    assert torch.equal(emb1, emb2)
    with torch.no_grad():
        cache = model.prefix_pass(images, masks, tokens, tmask)
        v1 = model.denoise_step(cache, None, noise, torch.full((1,), 1.0))
        v2 = model.denoise_step(cache, None, noise, torch.full((1,), 0.3))
    assert (v1 - v2).abs().max() > 1e-4


def test_prompt_formats(tiny_ckpts):
    pol05 = archs.get("pi05").load_policy(tiny_ckpts["pi05-tiny"])
    state = np.linspace(-0.5, 0.5, 8)
    inp = pol05.prepare([np.zeros((224, 224, 3), np.uint8)] * 2, state, " pick_up the bowl\n")
    n = int(inp.token_mask.sum())
    ids = inp.tokens[0, :n].tolist()
    assert ids[0] == BOS_ID and inp.tokens[0, n:].eq(0).all() and inp.state is None
    norm = 2 * (state - pol05.stats.state["q01"]) / (pol05.stats.state["q99"] - pol05.stats.state["q01"]) - 1
    bins = " ".join(str(b) for b in discretize_state(norm))
    assert pol05.tokenizer.decode(ids[1:]) == f"Task: pick up the bowl, State: {bins};\nAction: "
    assert not inp.image_masks[2].any() and inp.images[2].eq(-1).all()  # the empty camera
    pol0 = archs.get("pi0").load_policy(tiny_ckpts["pi0-tiny"])
    inp0 = pol0.prepare([np.zeros((224, 224, 3), np.uint8)] * 2, state, "pick up the bowl")
    n0 = int(inp0.token_mask.sum())
    assert pol0.tokenizer.decode(inp0.tokens[0, 1:n0].tolist()) == "pick up the bowl\n"
    mean, std = pol0.stats.state["mean"], pol0.stats.state["std"]
    assert np.allclose(inp0.state[0, :8].numpy(), (state - mean) / (std + 1e-8), atol=1e-6)
    assert inp0.state[0, 8:].eq(0).all()


def test_char_tokenizer_is_paligemma_shaped():
    tok = build_char_tokenizer(1024)
    ids, mask = tokenize_prompt(tok, "ab c\n", 8)
    assert ids[0] == BOS_ID and mask.sum() == 6 and ids[6:].tolist() == [0, 0]
    assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("<eos>") == 1


def test_policy_unnormalises_and_adds_delta_back(tmp_path, tiny_models):
    model = tiny_models["pi0-tiny"]
    path = _openpi_copy(model, tmp_path / "pi0_libero")
    pol = archs.get("pi0").load_policy(path)
    imgs = [np.full((256, 256, 3), 128, np.uint8)] * 2  # 256 -> 224 resize
    state = np.linspace(-0.3, 0.3, 8)
    noise = np.random.default_rng(0).standard_normal((50, 32))
    act = pol.predict_action(imgs, state, "open the drawer", noise=noise)
    norm = pol.predict_normalized(pol.prepare(imgs, state, "open the drawer"), noise)[:, :7]
    s = pol.stats.action
    want = norm * (s["std"] + 1e-6) + s["mean"]
    want[:, :6] += state[:6]
    assert act.shape == (50, 7) and np.allclose(act, want, atol=1e-5)


# ----------------------------------------------------------------------------- bad input


def _edit_config(path: Path, **changes) -> None:
    """Set `a__b=value` (a.b) in config.json, or in omnimodel.json for its `omnimodel_*` keys."""
    for name in ("config.json", "omnimodel.json"):
        mine = {k: v for k, v in changes.items() if k.startswith("omnimodel_") == (name == "omnimodel.json")}
        if not mine:
            continue
        raw = json.loads((path / name).read_text())
        for key, value in mine.items():
            node = raw
            parts = key.split("__")
            for p in parts[:-1]:
                node = node[p]
            node[parts[-1]] = value
        (path / name).write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "change, words",
    [
        ({"omnimodel_sizes__llm__heads": "8"}, "omnimodel_sizes.llm.heads"),
        ({"omnimodel_sizes__vision__width": 250}, "not divisible"),
        ({"omnimodel_sizes__expert__head_dim": 32}, "share one attention"),
        ({"omnimodel_sizes__llm__depth": 10**9}, "omnimodel_sizes.llm.depth"),
        ({"chunk_size": -1}, "chunk_size"),
        ({"image_resolution": [224, 112]}, "image_resolution"),
        ({"normalization_mapping": {"STATE": "ZSCORE"}}, "normalization_mapping.STATE"),
    ],
)
def test_bad_config_is_one_line_error(tmp_path, tiny_ckpts, change, words):
    path = tmp_path / "bad"
    shutil.copytree(tiny_ckpts["pi0-tiny"], path)
    _edit_config(path, **change)
    with pytest.raises(ConfigError) as exc:
        archs.get("pi0").load_model(path)
    msg = str(exc.value)
    file = "omnimodel.json" if next(iter(change)).startswith("omnimodel_") else "config.json"
    assert "\n" not in msg and f"{file}:" in msg and f"fix {file}" in msg and words in msg, msg


def test_side_file_checked_and_optional(tmp_path, tiny_ckpts):
    """omnimodel.json: closed keys, JSON object, one-line errors naming it; without it the released sizes."""
    src = tiny_ckpts["pi0-tiny"]
    for text, words in (
        ('{"omnimodel_size": {}}', "unknown key omnimodel_size"),
        ('{"omnimodel_preset": 3}', "omnimodel_preset = 3: expected a string"),
        ('{"omnimodel_sizes": [1]}', "omnimodel_sizes = [1]: expected a JSON object"),
        ("[1]", "not a JSON object"),
        ("{", "not valid JSON"),
    ):
        path = tmp_path / "bad"
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(src, path)
        (path / "omnimodel.json").write_text(text)
        with pytest.raises((ConfigError, CheckpointError)) as exc:
            archs.get("pi0").read_config(path)
        msg = str(exc.value)
        assert "\n" not in msg and msg.startswith(str(path / "omnimodel.json")) and words in msg, msg
    (path / "omnimodel.json").unlink()  # a LeRobot checkpoint: the released sizes, named by its type
    cfg = archs.get("pi0").read_config(path)
    assert (cfg.llm.width, cfg.vocab, cfg.name) == (2048, 257_152, "pi0")
    with pytest.raises(CheckpointError, match=r"but the config implies .*omnimodel\.json's omnimodel_sizes"):
        archs.get("pi0").load_model(path)


def test_sizes_inside_config_json_still_read(tmp_path, tiny_ckpts, tiny_models):
    """Checkpoints written before omnimodel.json kept omnimodel_preset / omnimodel_sizes in config.json."""
    path = tmp_path / "old"
    shutil.copytree(tiny_ckpts["pi05-tiny"], path)
    raw = json.loads((path / "config.json").read_text())
    raw.update(json.loads((path / "omnimodel.json").read_text()))
    (path / "config.json").write_text(json.dumps(raw))
    (path / "omnimodel.json").unlink()
    model = archs.get("pi05").load_model(path)
    assert model.cfg == tiny_models["pi05-tiny"].cfg
    raw["omnimodel_sizes"]["llm"]["heads"] = "8"
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"config\.json: omnimodel_sizes\.llm\.heads = '8'"):
        archs.get("pi05").read_config(path)


def test_pi0_weights_under_pi05_config(tmp_path, tiny_ckpts):
    path = tmp_path / "mixed"
    shutil.copytree(tiny_ckpts["pi0-tiny"], path)
    _edit_config(path, type="pi05", tokenizer_max_length=48)
    assert archs.for_checkpoint(path).name == "pi05"  # LeRobot's type decides the arch ...
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: holds π0 tensors .*config\.json says π0\.5"
    ):
        archs.get("pi05").load_model(path)  # ... and the weights are refused in one line
    path2 = tmp_path / "mixed2"
    shutil.copytree(tiny_ckpts["pi05-tiny"], path2)
    _edit_config(path2, type="pi0")
    with pytest.raises(CheckpointError, match="holds π0.5 tensors"):
        archs.get("pi0").load_model(path2)


def test_missing_normalizer_file(tmp_path, tiny_ckpts):
    path = tmp_path / "nostats"
    shutil.copytree(tiny_ckpts["pi05-tiny"], path)
    victim = next(path.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name) as exc:
        archs.get("pi05").load_policy(path)
    assert "\n" not in str(exc.value)


def test_missing_embedding(tmp_path, tiny_ckpts):
    path = tmp_path / "noembed"
    shutil.copytree(tiny_ckpts["pi0-tiny"], path)
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["model.paligemma_with_expert.paligemma.lm_head.weight"]
    del tensors["model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the text embedding is missing"):
        archs.get("pi0").load_model(path)


def test_wrong_preset_for_arch(tmp_path):
    with pytest.raises(ConfigError, match="unknown pi0 preset"):
        archs.get("pi0").make_checkpoint("pi05-tiny", tmp_path / "x")
    assert archs.get("pi05").observation_keys()["state"] == "observation/state"


def test_prefix_pass_runs_no_dead_module(tiny_models):
    """The last PaliGemma layer's q/o/MLP/post-norm and the LLM final norm never feed an action: not run."""
    model = tiny_models["pi0-tiny"]
    images, masks, tokens, tmask, _, _ = _inputs(model.cfg)
    ran = set()
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: ran.add(n)) for n, m in model.named_modules() if n
    ]
    try:
        with torch.no_grad():
            model.prefix_pass(images, masks, tokens, tmask)
    finally:
        for h in hooks:
            h.remove()
    last = "paligemma_with_expert.paligemma.model.language_model.layers.2."
    assert {last + "input_layernorm", last + "self_attn.k_proj", last + "self_attn.v_proj"} <= ran
    dead = {
        last + "self_attn.q_proj",
        last + "self_attn.o_proj",
        last + "mlp",
        last + "post_attention_layernorm",
    }
    assert not dead & ran and "paligemma_with_expert.paligemma.model.language_model.norm" not in ran
    assert "paligemma_with_expert.paligemma.model.language_model.layers.1.mlp" in ran


def test_bfloat16_model_runs(tiny_models):
    """load_model(dtype=bf16): every tensor bf16, the velocity within 3% of fp32 (the bf16 parity floor is ~1%)."""
    model = tiny_models["pi05-tiny"]
    images, masks, tokens, tmask, _, noise = _inputs(model.cfg)
    t = torch.full((1,), 0.5)
    low = zoo.build_random_model("pi05-tiny").to(torch.bfloat16)
    with torch.no_grad():
        v = model.denoise_step(model.prefix_pass(images, masks, tokens, tmask), None, noise, t)
        cache = low.prefix_pass([i.bfloat16() for i in images], masks, tokens, tmask)
        vb = low.denoise_step(cache, None, noise, t)
    rel = ((vb - v).norm() / v.norm()).item()
    assert vb.dtype == torch.float32 and rel < 0.03, (
        f"bf16 vs fp32 velocity: relative error {rel:.3g} (threshold 0.03)"
    )


def test_prompt_ids_match_transformers_autotokenizer(tiny_ckpts):
    """What LeRobot's TokenizerProcessorStep would produce from the checkpoint's tokenizer files."""
    from transformers import AutoTokenizer

    path = tiny_ckpts["pi05-tiny"]
    hf = AutoTokenizer.from_pretrained(str(path))
    pol = archs.get("pi05").load_policy(path)
    inp = pol.prepare([np.zeros((224, 224, 3), np.uint8)], np.zeros(8), "open the top drawer")
    n = int(inp.token_mask.sum())
    text = pol.tokenizer.decode(inp.tokens[0, 1:n].tolist())
    enc = hf(text, padding="max_length", max_length=200, padding_side="right", truncation=True)
    assert (
        enc["input_ids"] == inp.tokens[0].tolist()
        and enc["attention_mask"] == inp.token_mask[0].long().tolist()
    )


def test_openpi_full_size_config_from_weights(tmp_path):
    """openpi's config.json names the variants only; π0 vs π0.5 comes from the tensor names."""
    for pi05, key in ((True, "time_mlp_in.weight"), (False, "state_proj.weight")):
        path = tmp_path / key
        path.mkdir()
        (path / "config.json").write_text(
            json.dumps(
                {
                    "action_dim": 32,
                    "action_horizon": 10,
                    "paligemma_variant": "gemma_2b",
                    "action_expert_variant": "gemma_300m",
                    "precision": "bfloat16",
                }
            )
        )
        save_file({key: torch.zeros(2, 2)}, str(path / "model.safetensors"))
        arch = archs.for_checkpoint(path)
        cfg = arch.read_config(path)
        assert arch.pi05 == pi05 and cfg.pi05 == pi05 and cfg.chunk == 10
        assert (cfg.llm.width, cfg.expert.width, cfg.vocab, cfg.vision.depth) == (2048, 1024, 257_152, 27)
        assert cfg.max_token_len == (200 if pi05 else 48) and not cfg.discrete_state_input
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "time_mlp_in.weight", bad)
    _edit_config(bad, paligemma_variant="gemma_7b")
    with pytest.raises(ConfigError, match="paligemma_variant"):
        archs.get("pi05").read_config(bad)


def test_zoo_make_with_custom_sizes(tmp_path):
    path = archs.get("pi05").make_checkpoint(
        "pi05-tiny",
        tmp_path / "c",
        sets=("omnimodel_sizes.llm.depth=2", "omnimodel_sizes.expert.depth=2", "chunk_size=4"),
    )
    cfg = archs.get("pi05").read_config(path)
    assert (cfg.llm.depth, cfg.expert.depth, cfg.chunk, cfg.llm.width) == (2, 2, 4, 512)
    assert archs.get("pi05").load_model(path).cfg == cfg
    with pytest.raises(
        ConfigError, match=r"^--set: omnimodel_sizes.expert.depth = 3: expected 2 like the LLM"
    ):
        archs.get("pi05").make_checkpoint("pi05-tiny", tmp_path / "d", sets=("omnimodel_sizes.llm.depth=2",))
    with pytest.raises(ConfigError, match="not a settable key"):
        archs.get("pi05").make_checkpoint("pi05-tiny", tmp_path / "e", sets=("type=pi0",))
    path = archs.get("pi05").make_checkpoint("pi05-tiny", tmp_path / "f", sets=("omnimodel_preset=my-size",))
    assert archs.for_checkpoint(path).name == "pi05" and archs.get("pi05").read_config(path).name == "my-size"
    assert json.loads((path / "omnimodel.json").read_text())["omnimodel_preset"] == "my-size"


@pytest.mark.parametrize("name, prefix", [("pi05", 968), ("pi0", 816)])
def test_full_size_shapes_on_meta(name, prefix):
    """The released sizes run end to end on the meta device (no memory): 3x256 image + 200/48 text slots."""
    cfg = PRESETS[name]
    with torch.device("meta"):
        model = PI0(cfg)
        images = [torch.zeros(1, 3, 224, 224) for _ in range(3)]
        masks = [torch.ones(1, dtype=torch.bool)] * 3
        tokens = torch.zeros(1, cfg.max_token_len, dtype=torch.long)
        tmask = torch.ones(1, cfg.max_token_len, dtype=torch.bool)
        cache = model.prefix_pass(images, masks, tokens, tmask)
        v = model.denoise_step(cache, torch.zeros(1, 32), torch.zeros(1, cfg.chunk, 32), torch.ones(1))
    assert len(cache.kv) == 18 and tuple(cache.kv[0].k.shape) == (1, 1, prefix, 256)
    assert tuple(v.shape) == (1, cfg.chunk, 32)


def test_masked_camera_and_padding_change_nothing(tiny_models):
    """Pitfalls 3, 4, 23: masked slots are never attended and take no positions (cumsum of valid - 1)."""
    model = tiny_models["pi05-tiny"]
    images, masks, tokens, tmask, _, noise = _inputs(model.cfg)
    t = torch.full((1,), 0.8)
    other_images = images[:2] + [torch.rand_like(images[2])]  # a different picture in the masked slot
    other_tokens = torch.where(tmask, tokens, torch.full_like(tokens, 77))  # different ids in the padding
    with torch.no_grad():
        v = model.denoise_step(model.prefix_pass(images, masks, tokens, tmask), None, noise, t)
        w = model.denoise_step(model.prefix_pass(other_images, masks, other_tokens, tmask), None, noise, t)
    assert torch.equal(v, w)
    emb, pad, _ = model.embed_prefix(images, masks, tokens, tmask)
    positions = torch.cumsum(pad.long(), 1) - 1
    n = model.cfg.vision.n_patches
    assert positions[0, 3 * n].item() == 2 * n  # the first text token follows the two real cameras
