"""`omnimodel eval`: closed-loop success per suite and offline action L1 for any policy with `predict_action`.

A policy is any object with `predict_action(images, proprio, instruction) -> (chunk, 7)`
returning un-normalised actions in the policy convention (gripper 1 open / 0 close). Each chunk
is executed open loop, each action post-processed as the LIBERO evaluation of these policies does
(`process_action`).
Environments are Gymnasium-style (`reset(seed=...)`, 5-tuple `step`) with LIBERO's observation
keys; users plug their own in through `EvalTask` (and the CLI's `--tasks MODULE:FUNCTION`).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from omnimodel.atomic import atomic_path
from omnimodel.errors import CheckpointError, ConfigError, NotImplementedYet

log = logging.getLogger(__name__)


class Policy(Protocol):
    """What eval drives: 224x224 uint8 images [third-person, wrist], raw 8-D proprio, instruction."""

    def predict_action(
        self, images: list[np.ndarray], proprio: np.ndarray, instruction: str
    ) -> np.ndarray: ...


def libero_observation(obs: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """The policy's prepare step for LIBERO-convention observations: rotate both images 180 degrees, build the 8-D state."""
    images = [
        np.ascontiguousarray(obs[k][::-1, ::-1]) for k in ("agentview_image", "robot0_eye_in_hand_image")
    ]
    if "state" in obs:
        state = np.asarray(obs["state"], np.float32)
    else:
        state = np.concatenate([obs["robot0_eef_pos"], _quat_to_axis_angle(obs["robot0_eef_quat"]),
                                obs["robot0_gripper_qpos"]]).astype(np.float32)  # fmt: skip
    return images, state


def _quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """Robosuite (x, y, z, w) quaternion to axis-angle, as LIBERO's eval does."""
    x, y, z, w = (float(v) for v in q)
    w = min(max(w, -1.0), 1.0)
    den = np.sqrt(1.0 - w * w)
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return np.array([x, y, z]) * 2.0 * np.arccos(w) / den


def process_action(action: np.ndarray) -> np.ndarray:
    """The policy convention's post-processing: gripper [0, 1] -> [-1, 1], binarised by sign, then sign flipped (1 open -> -1 open)."""
    out = np.array(action, dtype=np.float64, copy=True)
    g = 2.0 * out[..., 6] - 1.0
    out[..., 6] = -np.sign(g)
    return out


@dataclass
class EvalTask:
    """One task to evaluate: suite, name, instruction, step limit and a factory for its Gymnasium-style env."""

    suite: str
    name: str
    instruction: str
    max_steps: int
    make_env: Callable[[], Any]
    prepare: Callable[[dict], tuple[list[np.ndarray], np.ndarray]] = libero_observation


def suite_eval_tasks(suites: list[str] | tuple[str, ...] | None = None) -> list[EvalTask]:
    """EvalTasks for our built-in suites (default: all four)."""
    from omnimodel.suite import SUITE_NAMES, SuiteEnv, suite_tasks

    tasks = []
    for suite in suites or SUITE_NAMES:
        for t in suite_tasks(suite):
            tasks.append(EvalTask(suite, t.name, t.instruction, t.max_steps, lambda t=t: SuiteEnv(t)))
    return tasks


def load_tasks(spec: str) -> list[EvalTask]:
    """User tasks from 'package.module:function' (a function returning a list of EvalTask)."""
    module, _, func = spec.partition(":")
    if not module or not func:
        raise ConfigError(f"--tasks {spec!r} must look like package.module:function")
    try:
        tasks = getattr(importlib.import_module(module), func)()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load tasks from {spec!r}: {exc}") from exc
    if not tasks or not all(isinstance(t, EvalTask) for t in tasks):
        raise ConfigError(f"{spec} must return a non-empty list of omnimodel.eval.EvalTask")
    return list(tasks)


def episode_seed(seed: int, suite: str, task_index: int, episode: int) -> int:
    """Env seed of one eval episode (disjoint from the demonstration seeds of `omnimodel suite export`)."""
    from omnimodel.suite.export import episode_seed as _seed

    return _seed("eval", seed, suite, task_index, episode)


def run_episode(
    policy: Policy, task: EvalTask, env_seed: int, postprocess: bool = True, replan: int | None = None
) -> tuple[bool, int]:
    """One closed-loop episode, executing each predicted chunk (its first `replan` actions) open loop: (success, steps)."""
    env = task.make_env()
    obs, info = env.reset(seed=env_seed)
    reset = getattr(policy, "reset", None)
    if callable(reset):  # a sampling policy's noise stream restarts from the episode's seed
        reset(env_seed)
    steps = 0
    while steps < task.max_steps:
        images, proprio = task.prepare(obs)
        chunk = np.asarray(policy.predict_action(images, proprio, task.instruction), dtype=np.float64)
        chunk = chunk.reshape(-1, chunk.shape[-1])
        if chunk.shape[1] != 7 or not np.all(np.isfinite(chunk)):
            raise ConfigError(
                f"policy returned actions of shape {chunk.shape} or non-finite values; expected (chunk, 7)"
            )
        for action in chunk[:replan]:
            obs, _, terminated, truncated, info = env.step(process_action(action) if postprocess else action)
            steps += 1
            if terminated:
                return bool(info.get("success", True)), steps
            if truncated or steps >= task.max_steps:
                return bool(info.get("success", False)), steps
    return bool(info.get("success", False)), steps


@dataclass
class ClosedLoopResult:
    """Success per suite and per task, and how many episodes were run."""

    success_per_suite: dict[str, float]
    success_per_task: dict[str, float]
    episodes: int
    mean_steps: float
    seconds: float
    per_episode: list[dict] = field(default_factory=list)


class EpisodeProgress:
    """`episodes k/N` with the running success rate: one updating rich line on a terminal, plain lines otherwise.

    Off a terminal (logs, CI) a line is written every ~5% of the episodes and at the end, so a long
    eval shows it is alive without flooding the log.
    """

    def __init__(self, total: int, label: str = "closed-loop eval", enabled: bool = True, console=None):
        from rich.console import Console

        self.total, self.label, self.enabled, self.done, self.successes = total, label, enabled, 0, 0
        self.console = console or Console(stderr=True)
        self.every = max(1, total // 20)
        self._bar = None

    def __enter__(self) -> EpisodeProgress:
        if self.enabled and self.console.is_terminal:
            columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("episodes"), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeElapsedColumn())  # fmt: skip
            self._bar = Progress(*columns, console=self.console, transient=True)
            self._bar.__enter__()
            self._tid = self._bar.add_task(self.label, total=self.total, rate="")
        return self

    def line(self) -> str:
        """The plain-text status: `label: episodes k/N, success r% (s/k)`."""
        rate = self.successes / self.done if self.done else 0.0
        return f"{self.label}: episodes {self.done}/{self.total}, success {rate:.0%} ({self.successes}/{self.done})"

    def episode(self, success: bool, where: str = "") -> None:
        """Count one finished episode and redraw (terminal) or maybe print a line (not a terminal)."""
        self.done += 1
        self.successes += bool(success)
        if not self.enabled:
            return
        rate = f"success {self.successes / self.done:.0%}"
        if self._bar is not None:
            self._bar.update(self._tid, advance=1, rate=rate, description=where or self.label)
        elif self.done % self.every == 0 or self.done == self.total:
            self.console.print(self.line(), highlight=False, soft_wrap=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            if exc[0] is None:
                self.console.print(self.line(), highlight=False, soft_wrap=True)


def evaluate_closed_loop(
    policy: Policy,
    tasks: list[EvalTask],
    episodes_per_task: int,
    seed: int = 0,
    postprocess: bool = True,
    show_progress: bool = True,
    replan: int | None = None,
) -> ClosedLoopResult:
    """Run `episodes_per_task` seeded episodes of every task; success fraction per suite and task."""
    if episodes_per_task < 1:
        raise ConfigError("--episodes-per-task must be at least 1")
    start = time.perf_counter()
    rows: list[dict] = []
    task_index: dict[str, int] = {}
    with EpisodeProgress(len(tasks) * episodes_per_task, enabled=show_progress) as progress:
        for task in tasks:
            idx = task_index[task.suite] = task_index.get(task.suite, -1) + 1
            for ep in range(episodes_per_task):
                env_seed = episode_seed(seed, task.suite, idx, ep)
                ok, n = run_episode(policy, task, env_seed, postprocess, replan)
                rows.append(
                    {"suite": task.suite, "task": task.name, "seed": env_seed, "success": ok, "steps": n}
                )
                progress.episode(ok, task.suite)
    return _closed_loop_result(rows, time.perf_counter() - start)


def _closed_loop_result(rows: list[dict], seconds: float) -> ClosedLoopResult:
    """Success per suite and per task from per-episode rows (suite, task, seed, success, steps)."""
    per_task: dict[str, list[bool]] = {}
    per_suite: dict[str, list[bool]] = {}
    for r in rows:
        per_task.setdefault(f"{r['suite']}/{r['task']}", []).append(r["success"])
        per_suite.setdefault(r["suite"], []).append(r["success"])
    return ClosedLoopResult(
        {k: float(np.mean(v)) for k, v in per_suite.items()},
        {k: float(np.mean(v)) for k, v in per_task.items()},
        len(rows),
        float(np.mean([r["steps"] for r in rows])),
        seconds,
        rows,
    )


# ---------------------------------------------------------------- parallel closed loop
_WORKER: dict[str, Any] = {}


def _worker_init(policy_factory: Callable[[], Policy], tasks_factory: Callable[[], list[EvalTask]]) -> None:
    _WORKER["policy"] = policy_factory()
    _WORKER["tasks"] = tasks_factory()


def _worker_episode(job: tuple[int, int, int, bool, int | None]) -> tuple[int, int, int, bool, int]:
    ti, ep, env_seed, postprocess, replan = job
    ok, n = run_episode(_WORKER["policy"], _WORKER["tasks"][ti], env_seed, postprocess, replan)
    return ti, ep, env_seed, ok, n


def evaluate_closed_loop_parallel(
    policy_factory: Callable[[], Policy],
    tasks_factory: Callable[[], list[EvalTask]],
    episodes_per_task: int,
    seed: int = 0,
    workers: int = 2,
    postprocess: bool = True,
    show_progress: bool = True,
    replan: int | None = None,
) -> ClosedLoopResult:
    """`evaluate_closed_loop` over `workers` processes, each with its own policy (factories must pickle).

    Episodes, seeds and the result are the same as the serial run's: every episode is seeded by
    (seed, suite, task index, episode) alone, so only the order of execution changes.
    """
    import multiprocessing as mp

    if episodes_per_task < 1:
        raise ConfigError("--episodes-per-task must be at least 1")
    start = time.perf_counter()
    tasks = tasks_factory()
    jobs, task_index = [], {}
    for ti, task in enumerate(tasks):
        idx = task_index[task.suite] = task_index.get(task.suite, -1) + 1
        for ep in range(episodes_per_task):
            jobs.append((ti, ep, episode_seed(seed, task.suite, idx, ep), postprocess, replan))
    jobs.sort(key=lambda j: -tasks[j[0]].max_steps)  # long tasks first: better load balance
    results = {}
    ctx = mp.get_context("spawn")
    label = f"closed-loop eval ({workers} workers)"
    with (
        EpisodeProgress(len(jobs), label, enabled=show_progress) as progress,
        ctx.Pool(workers, initializer=_worker_init, initargs=(policy_factory, tasks_factory)) as pool,
    ):
        for ti, ep, env_seed, ok, n in pool.imap_unordered(_worker_episode, jobs, chunksize=1):
            results[(ti, ep)] = (env_seed, ok, n)
            progress.episode(ok)
    rows = []
    for ti, task in enumerate(tasks):  # the serial run's order
        for ep in range(episodes_per_task):
            env_seed, ok, n = results[(ti, ep)]
            rows.append({"suite": task.suite, "task": task.name, "seed": env_seed, "success": ok, "steps": n})
    return _closed_loop_result(rows, time.perf_counter() - start)


def make_tasks(tasks_from: str = "", suites: list[str] | None = None) -> list[EvalTask]:
    """The eval tasks of the CLI: user tasks from 'module:function', else our suites (picklable entry point)."""
    return load_tasks(tasks_from) if tasks_from else suite_eval_tasks(suites)


def worker_policy(path: str, threads: int = 1) -> Policy:
    """Load a target inside an eval worker with `threads` compute threads (picklable entry point)."""
    return load_target(path, threads=threads)[0]


def offline_l1(policy: Policy, demos, max_frames: int | None = 256, seed: int = 0) -> dict[str, Any]:
    """Mean |predicted - ground-truth| over action chunks of held-out demos (policy convention, un-normalised)."""
    from omnimodel.calib import FrameDataset, read_demos, subsample_frames

    episodes = read_demos(demos) if isinstance(demos, (str, Path)) else list(demos)
    ds = FrameDataset(episodes, subsample_frames(episodes, max_frames, seed))
    errs = []
    try:
        for k in range(len(ds)):
            s = ds[k]
            pred = np.asarray(policy.predict_action(s.images, s.proprio, s.instruction), np.float64)
            n = min(len(pred), len(s.actions))
            errs.append(np.abs(pred[:n] - s.actions[:n]).mean(0))
    finally:
        ds.close()
    per_dim = np.mean(errs, 0)
    return {"action_l1": float(per_dim.mean()), "action_l1_per_dim": per_dim.tolist(), "frames": len(errs)}


# ---------------------------------------------------------------- targets and the command
def detect_target(path: str | Path) -> str:
    """'run' for a native run directory (report.json / model.gguf), 'checkpoint' for one with config.json."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p} is not a directory: pass a checkpoint directory or a run directory")
    if (p / "report.json").is_file() or (p / "model.gguf").is_file():
        return "run"
    if (p / "config.json").is_file():
        return "checkpoint"
    raise CheckpointError(
        f"{p} has neither report.json/model.gguf (run dir) nor config.json (checkpoint dir)"
    )


def _bits_per_weight(path: Path, kind: str, policy: Any) -> float | None:
    bpw = getattr(policy, "bits_per_weight", None)
    if bpw is not None:
        return float(bpw)
    try:
        if kind == "run" and (path / "report.json").is_file():
            return float(json.loads((path / "report.json").read_text())["gguf"]["bpw"])
        if kind == "checkpoint":
            dtype = json.loads((path / "config.json").read_text()).get("torch_dtype", "float32")
            return 32.0 if dtype == "float32" else 16.0
    except (KeyError, ValueError, TypeError):
        log.warning("could not read bits per weight of %s", path)
    return None


def load_target(path: str | Path, threads: int = 0) -> tuple[Policy, str, float | None]:
    """Load a checkpoint (PyTorch) or a run directory (native runtime): (policy, backend, bits per weight).

    `threads` > 0 sets the compute threads (torch intra-op threads, or the native n_threads).
    """
    p = Path(path)
    kind = detect_target(p)
    if kind == "checkpoint":
        from omnimodel import models

        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        policy = models.load(p)
        backend = "pytorch"
    else:
        try:
            from omnimodel import runtime
        except ImportError as exc:
            raise NotImplementedYet(
                f"the native runtime (omnimodel.runtime) is not available to load {p}"
            ) from exc
        policy = runtime.load(p, n_threads=threads) if threads > 0 else runtime.load(p)
        backend = getattr(policy, "backend", "native")
    return policy, str(backend), _bits_per_weight(p, kind, policy)


def target_arch(target: str | Path | None, policy: Any = None):
    """The Arch of a checkpoint, a run directory or a policy server's metadata "arch"; None when none names one."""
    from omnimodel import archs

    name = None
    if isinstance(getattr(policy, "metadata", None), dict):
        name = policy.metadata.get("arch")
    if name is None and target is not None and Path(target).is_dir():
        p = Path(target)
        try:
            if detect_target(p) == "checkpoint":
                return archs.for_checkpoint(p)
            from omnimodel.serve import run_arch

            name = run_arch(p)
        except (CheckpointError, ConfigError):
            return None
    if not name:
        return None
    try:
        return archs.get(str(name))
    except ConfigError:
        return None


def action_protocol(target: str | Path | None, policy: Any = None) -> tuple[bool, int | None]:
    """(postprocess, replan) of the target's arch: whether eval applies `process_action`
    (`Arch.eval_postprocess`) and how many actions of each chunk run before the next query
    (`Arch.eval_replan`, None: the whole chunk); (True, None) when no arch is named."""
    arch = target_arch(target, policy)
    if arch is None:
        return True, None
    return bool(arch.eval_postprocess), arch.eval_replan


def evaluate_target(
    target: str | Path | None,
    policy: Policy,
    backend: str,
    bpw: float | None,
    tasks: list[EvalTask],
    episodes_per_task: int,
    seed: int,
    demos: str | Path | None = None,
    offline_frames: int | None = 256,
    show_progress: bool = True,
    workers: int = 1,
    tasks_factory: Callable[[], list[EvalTask]] | None = None,
    policy_factory: Callable[[], Policy] | None = None,
    postprocess: bool | None = None,
    replan: int | None = -1,
) -> dict[str, Any]:
    """Closed loop (and offline L1 when `demos` is given) for one policy, as the eval.json dict.

    With `workers` > 1 the closed loop runs in that many processes, each loading `target` again
    (with one compute thread) and building its tasks with `tasks_factory`. `postprocess` None and
    `replan` -1: as the target's arch says (`action_protocol`).
    """
    arch_post, arch_replan = action_protocol(target, policy)
    postprocess = arch_post if postprocess is None else postprocess
    replan = arch_replan if replan == -1 else replan
    if workers > 1 and (target is not None or policy_factory is not None) and tasks_factory is not None:
        factory = policy_factory or functools.partial(worker_policy, str(target), 1)
        closed = evaluate_closed_loop_parallel(factory, tasks_factory, episodes_per_task, seed, workers,
                                               postprocess, show_progress=show_progress, replan=replan)  # fmt: skip
    else:
        closed = evaluate_closed_loop(policy, tasks, episodes_per_task, seed, postprocess, show_progress=show_progress,
                                      replan=replan)  # fmt: skip
    result: dict[str, Any] = {
        "target": str(target) if target is not None else None,
        "backend": backend,
        "bits_per_weight": bpw,
        "seed": seed,
        "episodes": closed.episodes,
        "episodes_per_task": episodes_per_task,
        "postprocess": postprocess,
        "replan": replan,
        "success_per_suite": closed.success_per_suite,
        "success_mean": float(np.mean(list(closed.success_per_suite.values()))),
        "success_per_task": closed.success_per_task,
        "mean_steps": closed.mean_steps,
        "seconds": closed.seconds,
        "per_episode": closed.per_episode,
    }
    if demos is not None:
        result["offline"] = offline_l1(policy, demos, offline_frames, seed)
        result["action_l1"] = result["offline"]["action_l1"]
    return result


def write_json(data: dict, out: str | Path) -> Path:
    """Write eval.json atomically."""
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return out


def plot_success_vs_bpw(results: list[dict], png: str | Path) -> Path:
    """Plot mean and per-suite success against bits per weight for several eval results (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in results if r.get("bits_per_weight") is not None]
    if not pts:
        raise ConfigError("no result carries bits_per_weight; cannot plot success against it")
    pts.sort(key=lambda r: r["bits_per_weight"])
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["bits_per_weight"] for r in pts]
    for suite in sorted({s for r in pts for s in r["success_per_suite"]}):
        ax.plot(
            x, [100 * r["success_per_suite"].get(suite, np.nan) for r in pts], "o--", alpha=0.6, label=suite
        )
    ax.plot(x, [100 * r["success_mean"] for r in pts], "ks-", lw=2, label="mean")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return png
