"""Acceptance: the scripted expert succeeds in >= 98% of seeded episodes per task, a random policy in <= 5%."""

from __future__ import annotations

import numpy as np

from omnimodel.suite import SUITE_NAMES, SuiteEnv, rollout, suite_tasks

EPISODES = 8  # per task; 320 expert episodes without cameras


def test_expert_succeeds_on_every_task():
    failures = {}
    for suite in SUITE_NAMES:
        for task in suite_tasks(suite):
            env = SuiteEnv(task, render_images=False)
            results = [rollout(env, seed=1000 + ep) for ep in range(EPISODES)]
            rate = np.mean([ok for ok, _ in results])
            assert max(n for _, n in results) <= task.max_steps
            if rate < 0.98:
                failures[f"{suite}/{task.name}"] = rate
    assert not failures, f"expert success below 98%: {failures}"


def test_random_policy_rarely_succeeds():
    rng = np.random.default_rng(0)
    wins, total = 0, 0
    for suite in SUITE_NAMES:
        for task in suite_tasks(suite):
            env = SuiteEnv(task, render_images=False)
            for ep in range(2):
                env.reset(seed=ep)
                while True:
                    _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7))
                    if terminated or truncated:
                        break
                wins += info["success"]
                total += 1
    assert wins / total <= 0.05, f"random policy succeeded in {wins}/{total} episodes"
