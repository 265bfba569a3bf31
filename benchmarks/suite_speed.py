"""Environment steps per second on one core, with and without rendering both 224x224 cameras.

Usage: python benchmarks/suite_speed.py [--steps N]
Prints a table per suite: expert-driven and random-action stepping, rendered and physics-only,
and the ratio against the issue's floor of 1,000 rendered steps/s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from omnimodel.suite import SUITE_NAMES, SuiteEnv, suite_tasks
from omnimodel.suite.expert import Expert, expert_step

FLOOR = 1000.0


def _rate(suite: str, steps: int, render: bool, policy: str) -> tuple[float, float]:
    tasks = suite_tasks(suite)
    rng = np.random.default_rng(0)
    done, episode, start, cpu = 0, 0, time.perf_counter(), time.process_time()
    while done < steps:
        env = SuiteEnv(tasks[episode % len(tasks)], render_images=render)
        env.reset(seed=episode)
        expert = Expert(env)
        episode += 1
        while done < steps:
            if policy == "expert":
                _, (_, _, term, trunc, _) = expert_step(expert, env)
            else:
                _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 7))
            done += 1
            if term or trunc:
                break
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    # per CPU-second figures are what one dedicated core gives; wall-clock ones suffer from a busy machine
    print(f"{'suite':16s} {'policy':7s} {'rendered/s':>11s} {'per cpu-s':>10s} {'physics/s':>10s} {'vs 1000/s':>9s}")
    for suite in SUITE_NAMES:
        for policy in ("expert", "random"):
            r, r_cpu = _rate(suite, args.steps, True, policy)
            p, _ = _rate(suite, args.steps, False, policy)
            print(f"{suite:16s} {policy:7s} {r:11.0f} {r_cpu:10.0f} {p:10.0f} {r_cpu / FLOOR:8.2f}x")


if __name__ == "__main__":
    main()
