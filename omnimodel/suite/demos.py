"""Expert training frames generated on the fly, for any arch's behaviour cloning (`omnimodel train`).

Each frame holds the two upright 224x224 images a policy sees in `omnimodel eval`, the raw 8-D
state and the expert's clean plan of the next `chunk` actions in LIBERO's convention (gripper -1
open / +1 close); an arch converts them to its own training convention. Some episodes are "DART"
episodes: random action blocks perturb the executed actions while the labels stay the expert's
clean plan from the state actually reached, so the policy learns to recover.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from omnimodel.errors import ConfigError

log = logging.getLogger("omnimodel.train")


@dataclass(frozen=True)
class DemoSpec:
    """What to record: which suites, how many episodes per task, how long a label chunk, how to perturb."""

    suites: tuple[str, ...]
    episodes_per_task: int
    chunk: int
    seed: int = 0
    dart_fraction: float = 0.5  # share of episodes with perturbed execution
    dart_block_prob: float = 0.35  # chance that a `chunk`-step block of a DART episode is perturbed
    dart_sigma: float = 0.35  # per-step noise (action units) in a perturbed block
    dart_bias: float = 0.25  # per-block constant offset (action units)
    workers: int = 0  # processes (0: one per CPU core)


@dataclass
class DemoData:
    """Training frames: upright images (N, 2, 224, 224, 3) uint8, raw state (N, 8), chunks (N, chunk, 7), task index (N,).

    `actions` are LIBERO's convention when generated here; an arch may replace them with its own.
    """

    images: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    task: np.ndarray
    instructions: list[str]
    suites: list[str]
    episodes: int

    def __len__(self) -> int:
        return len(self.actions)


def record_episode(task, env_seed: int, dart: bool, spec: DemoSpec) -> dict[str, np.ndarray] | None:
    """One expert episode, each frame labelled with the expert's clean `spec.chunk`-step plan; None when it fails."""
    from omnimodel.suite import Expert, SuiteEnv, plan_chunk, upright
    from omnimodel.suite.expert import expert_step

    env = SuiteEnv(task)
    obs, _ = env.reset(seed=env_seed)
    expert = Expert(env)
    rng = np.random.default_rng([env_seed, 7919])
    imgs, props, chunks = [], [], []
    noise = np.zeros(7)
    while True:
        imgs.append(np.stack([upright(obs["agentview_image"]), upright(obs["robot0_eye_in_hand_image"])]))
        props.append(obs["state"].astype(np.float32))
        chunks.append(plan_chunk(expert, env, spec.chunk))
        if dart and env.state.steps % spec.chunk == 0:
            noise[:] = 0.0
            if rng.random() < spec.dart_block_prob:
                noise[:3] = rng.normal(0.0, spec.dart_bias, 3)
                noise[5] = rng.normal(0.0, spec.dart_bias)
        if dart and noise.any():
            action = expert.act(env)
            step = action.copy()
            step[:3] += noise[:3] + rng.normal(0.0, spec.dart_sigma, 3)
            step[5] += noise[5]
            obs, _, terminated, truncated, info = env.step(step)
            expert.tick()
        else:
            _, (obs, _, terminated, truncated, info) = expert_step(expert, env)
        if terminated or truncated:
            break
    if not info["success"]:
        return None
    return {
        "images": np.stack(imgs),
        "proprio": np.stack(props),
        "actions": np.stack(chunks).astype(np.float32),
    }


def _episode_job(args: tuple) -> tuple[int, dict | None]:
    """Worker: record the episodes of one (task, slot) until one succeeds (a few attempts)."""
    suite, task_index, slot, dart, spec = args
    from omnimodel.suite import suite_tasks
    from omnimodel.suite.export import episode_seed

    task = suite_tasks(suite)[task_index]
    for attempt in range(4):
        env_seed = episode_seed("train", spec.seed, suite, task_index, slot * 4 + attempt)
        ep = record_episode(task, env_seed, dart and attempt < 3, spec)
        if ep is not None:
            return slot, ep
    return slot, None


def generate_demos(spec: DemoSpec, show_progress: bool = True) -> DemoData:
    """Expert episodes for every task of spec.suites, DART-perturbed for a spec.dart_fraction share (parallel)."""
    from rich.progress import Progress

    from omnimodel.suite import suite_tasks

    if spec.episodes_per_task < 1:
        raise ConfigError("--episodes-per-task must be at least 1")
    tasks = [(s, i, t) for s in spec.suites for i, t in enumerate(suite_tasks(s))]
    n_dart = int(round(spec.dart_fraction * spec.episodes_per_task))
    jobs = []
    for k, (suite, i, _) in enumerate(tasks):
        for e in range(spec.episodes_per_task):
            jobs.append(
                (suite, i, k * spec.episodes_per_task + e, e >= spec.episodes_per_task - n_dart, spec)
            )
    workers = spec.workers or os.cpu_count() or 1
    results: dict[int, dict | None] = {}
    with Progress(disable=not show_progress, transient=True) as bar:
        tid = bar.add_task("expert episodes", total=len(jobs))
        if workers > 1 and len(jobs) > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for slot, ep in pool.imap_unordered(_episode_job, jobs):
                    results[slot] = ep
                    bar.advance(tid)
        else:
            for job in jobs:
                slot, ep = _episode_job(job)
                results[slot] = ep
                bar.advance(tid)
    failed = [slot for slot, ep in results.items() if ep is None]
    if failed:
        log.warning("%d of %d expert episodes failed and were dropped", len(failed), len(jobs))
    parts = {"images": [], "proprio": [], "actions": [], "task": []}
    for slot in sorted(results):
        ep = results[slot]
        if ep is None:
            continue
        for key in ("images", "proprio", "actions"):
            parts[key].append(ep[key])
        parts["task"].append(np.full(len(ep["actions"]), slot // spec.episodes_per_task, np.int64))
    if not parts["task"]:
        raise ConfigError("the expert produced no successful episode; the suite is broken")
    return DemoData(
        np.concatenate(parts["images"]),
        np.concatenate(parts["proprio"]).astype(np.float32),
        np.concatenate(parts["actions"]).astype(np.float32),
        np.concatenate(parts["task"]),
        [t.instruction for _, _, t in tasks],
        [s for s, _, _ in tasks],
        len(jobs) - len(failed),
    )


def load_hdf5_demos(root, chunk: int) -> DemoData:
    """Frames of LIBERO-style HDF5 demonstrations via omnimodel.calib (needs h5py), LIBERO action convention."""
    from omnimodel.calib import action_chunks, read_demos

    episodes = read_demos(root)
    keys = sorted({(ep.suite, ep.instruction) for ep in episodes})
    index = {k: i for i, k in enumerate(keys)}
    images, proprio, actions, task = [], [], [], []
    for ep in episodes:
        images.append(np.stack([ep.agentview, ep.wrist], axis=1))
        proprio.append(ep.proprio)
        actions.append(action_chunks(np.asarray(ep.actions, np.float32), chunk))
        task.append(np.full(ep.num_frames, index[(ep.suite, ep.instruction)], np.int64))
    return DemoData(
        np.concatenate(images),
        np.concatenate(proprio).astype(np.float32),
        np.concatenate(actions).astype(np.float32),
        np.concatenate(task),
        [k[1] for k in keys],
        [k[0] for k in keys],
        len(episodes),
    )
