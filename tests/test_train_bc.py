"""Behaviour-cloning training: data labels, statistics, eval-matched augmentation, a short run that learns and round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omnimodel.archs.openvla_oft.model import OpenVLAOFTConfig, TowerConfig
from omnimodel.errors import ConfigError
from omnimodel.models import preprocess
from omnimodel.suite import suite_tasks
from omnimodel.train import (
    STATS_KEY,
    DemoData,
    TrainConfig,
    action_tokens,
    batch_pixels,
    dataset_statistics,
    record_episode,
    train,
)


def micro_config() -> OpenVLAOFTConfig:
    """A very small OpenVLA-OFT (56-px patches, width 64) so a CPU test trains in seconds."""
    tower = dict(width=64, depth=2, heads=2, patch=56)
    return OpenVLAOFTConfig(
        TowerConfig("omnimodel/test_dino", mlp=128, n_registers=4, class_token=True, layer_scale=True, **tower),
        TowerConfig("omnimodel/test_siglip", mlp=128, attn_pool=True, **tower),
        hidden=64, layers=1, heads=2, kv_heads=2, mlp=128, vocab=576, text_vocab=512, pad_token_id=512, name="test-micro",
    )  # fmt: skip


@pytest.fixture(scope="module")
def episode():
    task = suite_tasks("libero_spatial")[0]
    ep = record_episode(task, 123, dart=False, cfg=TrainConfig())
    assert ep is not None
    return task, ep


def test_clean_episode_chunks_are_the_future_actions(episode):
    """Without perturbation the expert's 8-step plan at frame t is actions t..t+7 of the episode (last one repeated)."""
    _, ep = episode
    acts = ep["actions"]
    executed = acts[:, 0]
    t = len(executed)
    for k in range(8):
        np.testing.assert_allclose(acts[:, k], executed[np.minimum(np.arange(t) + k, t - 1)], atol=1e-6)
    assert set(np.unique(executed[:, 6]).tolist()) <= {0.0, 1.0}  # OFT convention: 1 open, 0 close
    assert executed[0, 6] == 1.0 and (executed[:, 6] == 0.0).any()


def test_dart_episode_labels_stay_expert_plans():
    """A perturbed episode still succeeds and its labels are the expert's clean plans (saturated in [-1, 1])."""
    task = suite_tasks("libero_goal")[0]
    cfg = TrainConfig(dart_block_prob=0.5)
    ep = record_episode(task, 5, dart=True, cfg=cfg)
    assert ep is not None
    clean = record_episode(task, 5, dart=False, cfg=cfg)
    assert len(ep["actions"]) != len(clean["actions"])  # the perturbation changed the trajectory
    assert np.abs(ep["actions"]).max() <= 1.0 + 1e-6


def test_statistics_and_tokens(episode):
    task, ep = episode
    n = len(ep["actions"])
    data = DemoData(
        ep["images"], ep["proprio"], ep["actions"], np.zeros(n, np.int64), [task.instruction], [task.suite], 1
    )
    stats = dataset_statistics(data)
    s = stats[STATS_KEY]
    assert s["action"]["mask"] == [True] * 6 + [False]
    assert len(s["proprio"]["q01"]) == 8 and s["num_transitions"] == n
    norm = preprocess.normalize_actions(ep["actions"], s)
    tok = action_tokens(norm, 512)
    assert tok.shape == (n, 56)
    # spec: bins linspace(-1, 1, 256), d = digitize(clip(a)), id = vocab - d; decode with bin centres
    centres = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    dec = centres[np.clip(512 - tok - 1, 0, 254)].reshape(n, 8, 7)
    assert np.abs(dec - np.clip(norm, -1, 1)).max() <= 2.0 / 255 + 1e-6
    assert tok.min() >= 512 - 256 and tok.max() <= 511


def test_unaugmented_crop_is_the_eval_center_crop(episode):
    """Training pixels at zero crop offset equal the eval's pixel_values (center crop), up to one uint8 level."""
    _, ep = episode
    imgs = ep["images"][:2]
    train_px = batch_pixels(torch.from_numpy(imgs), None, augment=False).numpy()
    eval_px = np.concatenate([preprocess.pixel_values(list(f)) for f in imgs])
    step = 1 / 255 / min(min(preprocess.DINO_STD), 0.5)
    assert np.abs(train_px - eval_px).max() <= step + 1e-5
    assert np.mean(np.abs(train_px - eval_px) > 1e-4) < 0.01


def test_augmentation_is_seeded_and_changes_pixels(episode):
    _, ep = episode
    imgs = torch.from_numpy(ep["images"][:2])
    a = batch_pixels(imgs, torch.Generator().manual_seed(3), augment=True)
    b = batch_pixels(imgs, torch.Generator().manual_seed(3), augment=True)
    c = batch_pixels(imgs, None, augment=False)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.01


def _six_frames(task, ep) -> DemoData:
    keep = np.arange(0, len(ep["actions"]), 6)[:6]
    return DemoData(ep["images"][keep], ep["proprio"][keep], ep["actions"][keep], np.zeros(len(keep), np.int64),
                    [task.instruction], [task.suite], 1)  # fmt: skip


def test_short_training_learns_and_checkpoint_loads(tmp_path, episode):
    """~20 steps on a handful of frames lower the loss; the checkpoint loads with omnimodel.models.load and acts."""
    from omnimodel import models

    task, ep = episode
    data = _six_frames(task, ep)
    cfg = TrainConfig(steps=20, batch=3, lr=2e-3, warmup=2, log_every=4, device="cpu", ema=0.0, augment=False)
    out = tmp_path / "ckpt"
    res = train(cfg, out, data=data, model_cfg=micro_config(), command="pytest", show_progress=False)
    losses = [r["loss"] for r in res.log]
    assert len(losses) == 5
    assert losses[-1] < 0.7 * losses[0], losses
    assert (out / "train_log.jsonl").read_text().count("\n") == 5
    assert "pytest" in (out / "TRAINING.md").read_text()
    stats = json.loads((out / "dataset_statistics.json").read_text())
    assert list(stats) == [STATS_KEY]
    policy = models.load(out)
    act = policy.predict_action(list(ep["images"][0]), ep["proprio"][0], task.instruction)
    assert act.shape == (8, 7) and np.all(np.isfinite(act))


def test_hdf5_demos_give_the_same_frames_as_live_expert_data(tmp_path):
    """`--demos DIR` (C's LIBERO-style export read through omnimodel.calib) yields what the live path records."""
    from omnimodel.suite.export import episode_seed, export_task
    from omnimodel.train import load_hdf5_demos

    task = suite_tasks("libero_object")[2]
    export_task(task, 2, tmp_path / task.suite / f"{task.name}_demo.hdf5", episodes=1, seed=0)
    data = load_hdf5_demos(tmp_path)
    live = record_episode(task, episode_seed("demo", 0, task.suite, 2, 0), dart=False, cfg=TrainConfig())
    assert data.instructions == [task.instruction] and data.suites == [task.suite]
    np.testing.assert_array_equal(data.images, live["images"])
    np.testing.assert_allclose(data.proprio, live["proprio"], atol=1e-6)
    np.testing.assert_allclose(data.actions, live["actions"], atol=1e-6)


def test_device_choice():
    from omnimodel.errors import ConfigError
    from omnimodel.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")


def test_padded_forward_equals_each_samples_own_forward():
    """Mixed-task batches: right-padded prompts with masked pad keys give every sample its unpadded result."""
    from omnimodel.archs.openvla_oft.model import OpenVLAOFT, init_weights
    from omnimodel.archs.openvla_oft.prompt import prompt_ids as build_prompt_ids
    from omnimodel.models.tokenizer import build_char_tokenizer
    from omnimodel.train import padded_forward, task_prompt_table

    cfg = micro_config()
    model = OpenVLAOFT(cfg).eval()
    init_weights(model, 3)
    tok = build_char_tokenizer(cfg.text_vocab)
    prompts = [
        build_prompt_ids(tok, s) for s in ("pick up the cube in the front", "put the bowl on the plate", "go")
    ]
    table, lengths = task_prompt_table(prompts, cfg.pad_token_id, torch.device("cpu"))
    assert len(set(lengths.tolist())) == 3
    g = torch.Generator().manual_seed(0)
    px = torch.randn(3, 6 * cfg.num_images, 224, 224, generator=g)
    proprio = torch.randn(3, cfg.proprio_dim, generator=g)
    with torch.no_grad():
        out = padded_forward(model, px, table, lengths, proprio)
        for i, ids in enumerate(prompts):
            ref = model(px[i : i + 1], torch.tensor([ids]), proprio[i : i + 1], with_logits=True)
            torch.testing.assert_close(out.actions[i], ref.actions[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out.action_logits[i], ref.action_logits[0], atol=1e-4, rtol=1e-4)
        # a batch of one at its own length (no padding at all) gives the same rows
        short = padded_forward(model, px[2:], table[2:, : lengths[2]], lengths[2:], proprio[2:])
        torch.testing.assert_close(short.actions[0], out.actions[2], atol=1e-5, rtol=1e-4)


def test_init_from_checkpoint_and_mixed_batches(tmp_path, episode):
    """--init loads a checkpoint's weights (training starts from its loss); a wrong preset is a clear error."""
    task, ep = episode
    data = _six_frames(task, ep)
    cfg = TrainConfig(steps=12, batch=3, lr=2e-3, warmup=2, log_every=4, device="cpu", ema=0.0, augment=False)
    first = train(cfg, tmp_path / "a", data=data, model_cfg=micro_config(), show_progress=False)
    cfg2 = TrainConfig(steps=4, batch=3, lr=1e-6, warmup=1, log_every=4, device="cpu", ema=0.0, augment=False,
                       init=str(tmp_path / "a"))  # fmt: skip
    second = train(cfg2, tmp_path / "b", data=data, model_cfg=micro_config(), show_progress=False)
    assert second.log[0]["loss"] < 0.8 * first.log[0]["loss"]
    bad = TrainConfig(steps=1, batch=3, device="cpu", init=str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="--init"):
        train(bad, tmp_path / "c", data=data, show_progress=False)  # default preset: other shapes
