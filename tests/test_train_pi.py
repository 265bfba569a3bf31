"""Flow-matching behaviour cloning of π0.5: the loss of the spec, prompts as the policy builds them, a short run that learns and reloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnimodel.archs.pi0.model import GemmaConfig, SiglipConfig, preset
from omnimodel.archs.pi0.train import TrainConfig, flow_loss, flow_targets, train
from omnimodel.suite import suite_tasks
from omnimodel.suite.demos import DemoData, DemoSpec, record_episode


def micro_config():
    """pi05-tiny's structure at toy sizes (56-px images, width 64, one layer) so a CPU test trains in seconds."""
    stack = GemmaConfig(width=64, depth=1, mlp=128, heads=2, kv_heads=1, head_dim=32)
    return preset("pi05-tiny").replace(
        vision=SiglipConfig(width=64, depth=1, heads=2, mlp=128, patch=28, image=56), llm=stack, expert=stack,
        vocab=256, max_token_len=120, name="pi05-tiny",
    )  # fmt: skip


@pytest.fixture(scope="module")
def data():
    cfg = micro_config()
    spec = DemoSpec(("libero_spatial",), 1, cfg.chunk, workers=1)
    eps = [record_episode(suite_tasks("libero_spatial")[i], 100 + i, False, spec) for i in range(2)]
    assert all(e is not None for e in eps)
    keep = [np.arange(0, len(e["actions"]), 4) for e in eps]
    return DemoData(
        np.concatenate([e["images"][k] for e, k in zip(eps, keep, strict=True)]),
        np.concatenate([e["proprio"][k] for e, k in zip(eps, keep, strict=True)]),
        np.concatenate([e["actions"][k] for e, k in zip(eps, keep, strict=True)]),
        np.concatenate([np.full(len(k), i) for i, k in enumerate(keep)]),
        [suite_tasks("libero_spatial")[i].instruction for i in range(2)], ["libero_spatial"] * 2, 2,
    )  # fmt: skip


def test_flow_targets_follow_the_spec():
    a = torch.randn(4096, 3, 5)
    gen = torch.Generator().manual_seed(0)
    x_t, t, u = flow_targets(a, gen)
    eps = u + a  # u = eps - a
    torch.testing.assert_close(x_t, t[:, None, None] * eps + (1 - t[:, None, None]) * a)
    assert float(t.min()) >= 0.001 and float(t.max()) <= 1.0
    # Beta(1.5, 1) * 0.999 + 0.001 has mean 0.6 * 0.999 + 0.001
    assert abs(float(t.mean()) - (0.6 * 0.999 + 0.001)) < 0.02
    assert abs(float(eps.std()) - 1.0) < 0.02
    v = u.clone()
    v[..., 4] += 10.0  # a padded dim: not in the loss
    assert float(flow_loss(v, u, 4)) == 0.0 and float(flow_loss(v, u, 5)) > 0.0


def test_short_run_learns_and_writes_a_policy_that_reloads(data, tmp_path):
    cfg = TrainConfig(steps=40, batch=8, lr=1e-3, warmup=5, device="cpu", ema=0.0, log_every=10)
    res = train(cfg, tmp_path / "ckpt", data=data, model_cfg=micro_config(), show_progress=False)
    losses = [r["loss"] for r in res.log]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    from omnimodel.archs.pi0.policy import load_policy

    policy = load_policy(tmp_path / "ckpt")  # train() already checked its prompts against training's
    assert policy.spec.state_in_prompt and policy.spec.origin == "lerobot"
    policy.reset(0)
    out = policy.predict_action(list(data.images[0]), data.proprio[0], data.instructions[0])
    assert out.shape == (micro_config().chunk, 7) and np.isfinite(out).all()
    text = (tmp_path / "ckpt" / "TRAINING.md").read_text()
    assert "flow-matching" in text and '"steps": 40' in text
