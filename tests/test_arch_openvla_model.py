"""The OpenVLA reference: published parameter counts, cached greedy decoding, de-tokenizer, causality."""

import numpy as np
import pytest
import torch

from omnimodel.archs.openvla.model import (
    OpenVLA,
    init_weights,
    preset,
    prompt,
    tokens_to_actions,
    unnormalize,
)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = OpenVLA(preset("openvla-tiny")).eval()
    init_weights(model, seed=0)
    return model


def inputs(cfg, seed, n_prompt=12):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(1, 6, 224, 224, generator=gen)
    ids = torch.randint(3, cfg.text_vocab - cfg.n_action_bins, (1, n_prompt), generator=gen)
    ids = torch.cat([torch.tensor([[cfg.bos_token_id]]), ids, torch.tensor([[cfg.space_token_id]])], dim=1)
    return pixels, ids


def test_openvla_7b_parameter_counts_match_published():
    with torch.device("meta"):
        m = OpenVLA(preset("openvla"))
    vb = m.vision_backbone
    assert n_params(m) == 7_541_237_184
    assert n_params(m.language_model) == 6_738_939_904
    assert m.language_model.model.embed_tokens.weight.numel() == 131_334_144
    assert m.language_model.lm_head.weight.numel() == 131_334_144
    assert n_params(m.language_model.model.layers[0]) == 202_383_360
    assert n_params(vb.featurizer) == 303_230_976
    assert n_params(vb.fused_featurizer) == 427_680_704
    assert n_params(vb.fused_featurizer.attn_pool) == 15_238_352
    assert n_params(m.projector) == 71_385_600


def test_tiny_preset_is_small_and_keeps_structure(tiny):
    cfg = tiny.cfg
    assert n_params(tiny) < 10_000_000
    assert cfg.num_images == 1 and cfg.action_dim == 7 and cfg.n_action_bins == 256
    assert cfg.vocab % cfg.pad_to_multiple_of == 0 and cfg.text_vocab == 512
    assert cfg.dino.layer_scale and cfg.dino.n_registers == 4 and cfg.siglip.attn_pool


@pytest.mark.parametrize("seed", range(5))
def test_cached_greedy_equals_full_rerun(tiny, seed):
    pixels, ids = inputs(tiny.cfg, seed)
    cached = tiny.predict_tokens(pixels, ids)
    seq = ids
    with torch.no_grad():
        for _ in range(tiny.cfg.action_dim):
            nxt = tiny(pixels, seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert cached.shape == (1, 7)
    assert torch.equal(cached, seq[:, ids.shape[1] :])


def test_space_token_appended_once(tiny):
    ids = torch.tensor([[1, 10, 11]])
    once = tiny.with_space_token(ids)
    assert once.tolist() == [[1, 10, 11, tiny.cfg.space_token_id]]
    assert torch.equal(tiny.with_space_token(once), once)
    assert prompt("Pick Up The Cup") == "In: What action should the robot take to pick up the cup?\nOut:"


def test_detokenizer_known_values():
    cfg = preset("openvla")
    bins = np.linspace(-1, 1, 256)
    centers = (bins[:-1] + bins[1:]) / 2
    ids = np.array([31999, 31998, 31872, 31745, 31744, 0, 32063])
    got = tokens_to_actions(ids, cfg)
    # idx = clip(32000 - id - 1, 0, 254): 0, 1, 127, 254, 254 (clipped), 254 (clipped), 0 (clipped)
    np.testing.assert_array_equal(got, centers[[0, 1, 127, 254, 254, 254, 0]])
    assert got[0] == pytest.approx(-1 + 1 / 255) and got[3] == pytest.approx(1 - 1 / 255)


def test_unnormalize_bounds_q99_with_mask():
    stats = {
        "a": {"action": {"q01": [0.0, -2.0, 0.0], "q99": [2.0, 2.0, 1.0], "mask": [True, True, False]}},
        "b": {"action": {"q01": [10.0, 10.0, 10.0], "q99": [20.0, 20.0, 20.0]}},
    }
    a = np.array([-1.0, 0.5, 0.25])
    np.testing.assert_allclose(unnormalize(a, stats, "a"), [0.0, 1.0, 0.25])
    np.testing.assert_allclose(unnormalize(a, stats, "b"), [10.0, 17.5, 16.25])  # no mask: all dims
    with pytest.raises(ValueError, match="unnorm_key"):
        unnormalize(a, stats)
    np.testing.assert_allclose(unnormalize(a, {"a": stats["a"]}), [0.0, 1.0, 0.25])


def test_attention_is_causal(tiny):
    pixels, ids = inputs(tiny.cfg, 7)
    changed = ids.clone()
    changed[0, -2] = (changed[0, -2] + 1) % 200 + 3
    with torch.no_grad():
        h = [
            tiny.language_model.model(inputs_embeds=tiny.multimodal_embeddings(pixels, x)).last_hidden_state
            for x in (ids, changed)
        ]
    pos = h[0].shape[1] - 2  # the changed token's position in the multimodal sequence
    torch.testing.assert_close(h[0][:, :pos], h[1][:, :pos], rtol=0, atol=1e-6)
    assert (h[0][:, pos:] - h[1][:, pos:]).abs().max() > 1e-3
