"""Expert demonstrations written as LIBERO-style HDF5: one `<task_name>_demo.hdf5` per task under `<suite>/`.

Layout (as LIBERO's datasets): `data` group with attrs `problem_info` (JSON holding
`language_instruction`), `env_args`, `bddl_file_name`, `macros_image_convention`, `num_demos`,
`total`; `data/demo_N/actions` (T, 7), `dones`, `rewards`, `obs/{agentview_rgb, eye_in_hand_rgb,
ee_pos, ee_ori, ee_states, gripper_states, joint_states}`. Images are stored exactly as the env
returns them: 224x224 and upside down (`macros_image_convention` = "opengl", LIBERO's raw
convention); omnimodel.calib rotates them 180 degrees on read, as the policies' LIBERO eval does before
the policy, so the reader yields the same images the policy sees in `omnimodel eval`.
Only successful expert episodes are kept (as in LIBERO); frame t is the observation before action t.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path

import h5py
import numpy as np
from rich.progress import Progress

from omnimodel.atomic import atomic_path
from omnimodel.errors import ConfigError
from omnimodel.suite.env import SuiteEnv
from omnimodel.suite.expert import Expert, expert_step
from omnimodel.suite.tasks import SUITE_NAMES, TaskDef, suite_tasks

log = logging.getLogger(__name__)
FORMAT_TAG = "omnimodel-suite-v1"


def episode_seed(split: str, seed: int, suite: str, task_index: int, episode: int) -> int:
    """Deterministic per-episode env seed; `split` ("demo" or "eval") keeps demos and eval episodes apart."""
    return zlib.crc32(f"{split}/{seed}/{suite}/{task_index}/{episode}".encode())


def record_episode(task: TaskDef, seed: int) -> dict[str, np.ndarray] | None:
    """Run the expert on one seeded episode and return its frames and actions, or None if it failed."""
    env = SuiteEnv(task)
    obs, _ = env.reset(seed=seed)
    expert = Expert(env)
    keys = ("agentview_rgb", "eye_in_hand_rgb", "ee_pos", "ee_ori", "gripper_states", "joint_states")
    rows: dict[str, list] = {k: [] for k in (*keys, "actions")}
    while True:
        rows["agentview_rgb"].append(obs["agentview_image"])
        rows["eye_in_hand_rgb"].append(obs["robot0_eye_in_hand_image"])
        rows["ee_pos"].append(obs["state"][:3])
        rows["ee_ori"].append(obs["state"][3:6])
        rows["gripper_states"].append(obs["state"][6:])
        rows["joint_states"].append(env.joint_states())
        action, (obs, _, terminated, truncated, info) = expert_step(expert, env)
        rows["actions"].append(action)
        if terminated or truncated:
            break
    if not info["success"]:
        return None
    return {k: np.stack(v) for k, v in rows.items()}


def _write_demo(group: h5py.Group, ep: dict[str, np.ndarray], seed: int) -> None:
    t = len(ep["actions"])
    group.attrs["num_samples"] = t
    group.attrs["seed"] = seed
    group.create_dataset("actions", data=ep["actions"].astype(np.float64))
    done = np.zeros(t, np.uint8)
    done[-1] = 1
    group.create_dataset("dones", data=done)
    group.create_dataset("rewards", data=done.copy())
    obs = group.create_group("obs")
    for key in ("agentview_rgb", "eye_in_hand_rgb"):
        obs.create_dataset(key, data=ep[key], chunks=(1, *ep[key].shape[1:]), compression="lzf")
    for key in ("ee_pos", "ee_ori", "gripper_states", "joint_states"):
        obs.create_dataset(key, data=ep[key].astype(np.float64))
    obs.create_dataset("ee_states", data=np.concatenate([ep["ee_pos"], ep["ee_ori"]], 1).astype(np.float64))


def export_task(task: TaskDef, task_index: int, path: Path, episodes: int, seed: int, progress=None) -> int:
    """Write `episodes` successful expert demos of one task to `path`; returns the number of frames."""
    total = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        kept, attempt = 0, 0
        while kept < episodes:
            if attempt >= 3 * episodes + 10:
                raise ConfigError(
                    f"the expert keeps failing on {task.suite}/{task.name}; report this as a suite bug"
                )
            s = episode_seed("demo", seed, task.suite, task_index, attempt)
            attempt += 1
            ep = record_episode(task, s)
            if ep is None:
                log.warning("expert failed on %s seed %d; skipped", task.name, s)
                continue
            _write_demo(data.create_group(f"demo_{kept}"), ep, s)
            total += len(ep["actions"])
            kept += 1
            if progress is not None:
                progress()
        problem = {
            "problem_name": "omnimodel_tabletop_manipulation",
            "domain_name": "omnimodel_suite",
            "language_instruction": task.instruction,
            "suite": task.suite,
            "task_name": task.name,
        }
        data.attrs["problem_info"] = json.dumps(problem)
        data.attrs["env_name"] = "OmniSuite"
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "OmniSuite", "env_kwargs": {
            "suite": task.suite, "task": task.name, "max_steps": task.max_steps, "camera_heights": 224,
            "camera_widths": 224}})  # fmt: skip
        data.attrs["bddl_file_name"] = f"{task.suite}/{task.name}.bddl"
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["num_demos"] = episodes
        data.attrs["total"] = total
        data.attrs["tag"] = FORMAT_TAG
    return total


def export_suites(
    out_dir: str | Path,
    episodes_per_task: int = 50,
    seed: int = 0,
    suites: tuple[str, ...] | list[str] = SUITE_NAMES,
    show_progress: bool = True,
) -> list[Path]:
    """Export expert demos of every task of `suites` under `out_dir/<suite>/<task>_demo.hdf5`; returns the files."""
    if episodes_per_task < 1:
        raise ConfigError("--episodes-per-task must be at least 1")
    out = Path(out_dir)
    jobs = [(t, i) for s in suites for i, t in enumerate(suite_tasks(s))]
    paths = []
    with Progress(disable=not show_progress, transient=True) as bar:
        tid = bar.add_task("exporting demos", total=len(jobs) * episodes_per_task)
        for task, index in jobs:
            path = out / task.suite / f"{task.name}_demo.hdf5"
            export_task(task, index, path, episodes_per_task, seed, progress=lambda: bar.advance(tid))
            paths.append(path)
    return paths
