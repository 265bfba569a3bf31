"""A π policy's noise per episode: reset(seed) makes draw k of an episode the native runtime's draw k of its seed."""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel import eval as ev
from omnimodel.archs.pi0.noise import flow_noise


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from omnimodel.archs.pi0.policy import load_policy
    from omnimodel.archs.pi0.zoo import make_checkpoint

    return load_policy(make_checkpoint("pi05-tiny", tmp_path_factory.mktemp("ckpt") / "pi05-tiny", seed=3))


def _obs(seed: int):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    return images, rng.uniform(-0.5, 0.5, 8).astype(np.float32), "put the red cube in the bowl"


def test_reset_replays_the_native_noise_stream(policy):
    images, state, text = _obs(0)
    policy.reset(7)
    first = [policy.predict_action(images, state, text) for _ in range(2)]
    policy.reset(7)
    again = [policy.predict_action(images, state, text) for _ in range(2)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], first[1])  # draw 1 differs from draw 0
    cfg = policy.cfg
    for k in range(2):  # the k-th call after reset(7) is predict_action with draw k given explicitly
        given = policy.predict_action(images, state, text, noise=flow_noise(7, k, (cfg.chunk, cfg.action_dim)))
        np.testing.assert_array_equal(given, first[k])
    policy.reset(8)
    assert not np.allclose(policy.predict_action(images, state, text), first[0])


def test_eval_resets_each_episode_with_its_seed():
    class Recorder:
        def __init__(self):
            self.seeds = []

        def reset(self, seed):
            self.seeds.append(seed)

        def predict_action(self, images, proprio, instruction):
            return np.zeros((4, 7))

    task = ev.suite_eval_tasks(["libero_spatial"])[0]
    task.max_steps = 8
    rec = Recorder()
    ev.evaluate_closed_loop(rec, [task], 3, seed=5, postprocess=False, show_progress=False)
    assert rec.seeds == [ev.episode_seed(5, task.suite, 0, e) for e in range(3)]
