"""`omnimodel eval` engine: chunked closed loop with OFT post-processing, offline L1, eval.json, plot, target detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimodel import eval as ev
from omnimodel.calib import FrameDataset, policy_actions, read_demos
from omnimodel.errors import CheckpointError, ConfigError
from omnimodel.suite import SuiteEnv, suite_tasks
from omnimodel.suite.expert import Expert, expert_step
from omnimodel.suite.export import export_task


class OraclePolicy:
    """Plans the expert's next chunk on a copy of the live env; outputs OFT-convention actions (gripper 1 open)."""

    def __init__(self, chunk: int = 8):
        self.chunk = chunk
        self.env = None
        self.expert = None
        self.calls = 0

    def make_env(self, task):
        def factory():
            self.env = SuiteEnv(task)
            self.expert = Expert(self.env)
            return self.env

        return factory

    def predict_action(self, images, proprio, instruction):
        assert len(images) == 2 and all(im.shape == (224, 224, 3) and im.dtype == np.uint8 for im in images)
        np.testing.assert_allclose(proprio, self.env.proprio())
        self.calls += 1
        sim = self.env.clone()
        actions = [expert_step(self.expert, sim)[0] for _ in range(self.chunk)]
        return policy_actions(np.stack(actions))


class RandomPolicy:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)

    def predict_action(self, images, proprio, instruction):
        return self.rng.uniform(0, 1, (8, 7))


def _tasks(policy=None, picks=(("libero_goal", 1), ("libero_10", 0))):
    out = []
    for suite, i in picks:
        t = suite_tasks(suite)[i]
        make = policy.make_env(t) if policy else (lambda t=t: SuiteEnv(t))
        out.append(ev.EvalTask(suite, t.name, t.instruction, t.max_steps, make))
    return out


def test_process_action_matches_oft():
    out = ev.process_action(np.array([[0.1, 0, 0, 0, 0, 0, 0.9], [0, 0, 0, 0, 0, 0, 0.2]]))
    np.testing.assert_array_equal(out[:, 6], [-1.0, 1.0])  # near 1 (open) -> -1 (LIBERO open)
    assert out[0, 0] == 0.1


def test_chunked_closed_loop_with_oracle_succeeds():
    oracle = OraclePolicy()
    res = ev.evaluate_closed_loop(oracle, _tasks(oracle), episodes_per_task=2, seed=0, show_progress=False)
    assert res.success_per_suite == {"libero_goal": 1.0, "libero_10": 1.0}
    assert res.episodes == 4
    steps = sum(r["steps"] for r in res.per_episode)
    assert oracle.calls == sum(-(-r["steps"] // 8) for r in res.per_episode)  # one forward per 8 steps
    assert steps > 4 * 30


def test_without_postprocess_the_oracle_fails():
    # the policy speaks OFT's gripper convention: executing it raw must break grasping
    oracle = OraclePolicy()
    tasks = _tasks(oracle, picks=(("libero_goal", 1),))
    ok, _ = ev.run_episode(oracle, tasks[0], env_seed=3, postprocess=False)
    assert not ok


def test_random_policy_and_seeds_are_fixed():
    tasks = _tasks()
    a = ev.evaluate_closed_loop(RandomPolicy(0), tasks, 2, seed=4, show_progress=False)
    b = ev.evaluate_closed_loop(RandomPolicy(0), tasks, 2, seed=4, show_progress=False)
    assert a.success_per_suite == {"libero_goal": 0.0, "libero_10": 0.0}
    assert [r["seed"] for r in a.per_episode] == [r["seed"] for r in b.per_episode]
    assert len({r["seed"] for r in a.per_episode}) == 4
    with pytest.raises(ConfigError):
        ev.evaluate_closed_loop(RandomPolicy(), tasks, 0)


class ReplayPolicy:
    """Returns the ground-truth chunk of the demo frame it is shown (looked up by proprio)."""

    def __init__(self, ds, offset=0.0):
        self.table = {ds[k].proprio.tobytes(): ds[k].actions for k in range(len(ds))}
        self.offset = offset

    def predict_action(self, images, proprio, instruction):
        return self.table[np.asarray(proprio, np.float32).tobytes()] + self.offset


def test_offline_l1_and_eval_json_and_plot(tmp_path):
    task = suite_tasks("libero_goal")[0]
    export_task(task, 0, tmp_path / "demos" / "libero_goal" / f"{task.name}_demo.hdf5", episodes=1, seed=0)
    episodes = read_demos(tmp_path / "demos")
    ds = FrameDataset(episodes)
    assert ev.offline_l1(ReplayPolicy(ds), episodes, max_frames=20)["action_l1"] == pytest.approx(
        0.0, abs=1e-7
    )
    off = ev.offline_l1(ReplayPolicy(ds, offset=0.25), tmp_path / "demos", max_frames=20)
    assert off["action_l1"] == pytest.approx(0.25, abs=1e-6) and off["frames"] == 20
    ds.close()

    results = []
    for bpw in (16.0, 4.5):
        r = ev.evaluate_target("run", RandomPolicy(), "pytorch", bpw, _tasks(picks=(("libero_goal", 0),)), 1, 0,
                               demos=tmp_path / "demos", offline_frames=8, show_progress=False)  # fmt: skip
        results.append(r)
    out = ev.write_json(results[0], tmp_path / "eval.json")
    data = json.loads(out.read_text())
    for key in ("success_per_suite", "episodes", "seed", "backend", "action_l1"):
        assert key in data
    assert 0.0 <= data["success_per_suite"]["libero_goal"] <= 1.0 and data["episodes"] == 1
    png = ev.plot_success_vs_bpw(results, tmp_path / "eval.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_target_detection(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text("{}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    assert ev.detect_target(tmp_path / "ck") == "checkpoint"
    assert ev.detect_target(tmp_path / "run") == "run"
    with pytest.raises(CheckpointError):
        ev.detect_target(tmp_path / "empty")
    with pytest.raises(CheckpointError):
        ev.detect_target(tmp_path / "missing")


def test_user_tasks_spec_errors():
    with pytest.raises(ConfigError):
        ev.load_tasks("no_colon")
    with pytest.raises(ConfigError):
        ev.load_tasks("omnimodel.eval:does_not_exist")
    tasks = ev.load_tasks("omnimodel.eval:suite_eval_tasks")
    assert len(tasks) == 40


# ---------------------------------------------------------------- parallel closed loop (picklable pieces)
_LIVE: dict = {}
_PICKS = (("libero_goal", 1), ("libero_spatial", 0))


def _oracle_tasks():
    """Suite tasks whose envs register themselves, so the module-level oracle can plan on them."""
    out = []
    for suite, i in _PICKS:
        t = suite_tasks(suite)[i]

        def make(t=t):
            _LIVE["env"] = SuiteEnv(t)
            _LIVE["expert"] = Expert(_LIVE["env"])
            return _LIVE["env"]

        out.append(ev.EvalTask(suite, t.name, t.instruction, t.max_steps, make))
    return out


class _LiveOracle:
    def predict_action(self, images, proprio, instruction):
        sim = _LIVE["env"].clone()
        return policy_actions(np.stack([expert_step(_LIVE["expert"], sim)[0] for _ in range(8)]))


class _ProprioPolicy:
    """Deterministic in the observation alone: drifts towards a proprio-dependent point, closes when low."""

    def predict_action(self, images, proprio, instruction):
        a = np.zeros((8, 7))
        a[:, 0] = np.sin(7 * proprio[0])
        a[:, 1] = np.cos(5 * proprio[1])
        a[:, 2] = -0.6
        a[:, 6] = float(proprio[2] > 0.05)
        return a


def test_parallel_eval_equals_serial():
    import functools

    oracle = ev.evaluate_closed_loop_parallel(_LiveOracle, _oracle_tasks, 2, seed=1, workers=2, show_progress=False)
    assert oracle.success_per_suite == {"libero_goal": 1.0, "libero_spatial": 1.0}
    serial = ev.evaluate_closed_loop(_ProprioPolicy(), _oracle_tasks(), 2, seed=1, show_progress=False)
    par = ev.evaluate_closed_loop_parallel(_ProprioPolicy, functools.partial(_oracle_tasks), 2, seed=1, workers=2,
                                           show_progress=False)  # fmt: skip
    assert par.per_episode == serial.per_episode
    assert [r["seed"] for r in oracle.per_episode] == [r["seed"] for r in serial.per_episode]
