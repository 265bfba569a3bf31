"""The suite's env: task catalogue, determinism, observations, image convention and grasp physics."""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel.errors import ConfigError
from omnimodel.suite import SUITE_NAMES, SuiteEnv, get_task, suite_tasks, upright
from omnimodel.suite.env import MAX_DPOS


def test_four_suites_of_ten_tasks_with_unique_instructions():
    assert SUITE_NAMES == ("libero_spatial", "libero_object", "libero_goal", "libero_10")
    for suite in SUITE_NAMES:
        tasks = suite_tasks(suite)
        assert len(tasks) == 10, suite
        assert len({t.instruction for t in tasks}) == 10, suite
        assert len({t.name for t in tasks}) == 10, suite
    assert all(len(t.goals) == 2 for t in suite_tasks("libero_10"))
    goal_scenes = {t.objects for t in suite_tasks("libero_goal")}
    assert len(goal_scenes) == 1  # goal suite: same scene, different goals
    with pytest.raises(ConfigError):
        suite_tasks("libero_100")


def test_observation_keys_shapes_and_proprio():
    env = SuiteEnv(suite_tasks("libero_goal")[0])
    obs, info = env.reset(seed=3)
    for key in ("agentview_image", "robot0_eye_in_hand_image"):
        assert obs[key].shape == (224, 224, 3) and obs[key].dtype == np.uint8
    assert obs["state"].shape == (8,)
    np.testing.assert_allclose(obs["state"][:3], obs["robot0_eef_pos"])
    np.testing.assert_allclose(obs["state"][6:], obs["robot0_gripper_qpos"])
    assert obs["state"][6] == pytest.approx(-obs["state"][7])
    assert info["success"] is False


def test_same_seed_same_episode_different_seed_different_scene():
    task = suite_tasks("libero_object")[4]
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 7))

    def run(seed):
        env = SuiteEnv(task)
        obs, _ = env.reset(seed=seed)
        for a in actions:
            obs, *_ = env.step(a)
        return obs

    a, b, c = run(7), run(7), run(8)
    for key in ("agentview_image", "robot0_eye_in_hand_image", "state"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["agentview_image"], c["agentview_image"])


def test_images_are_upside_down_like_libero():
    env = SuiteEnv(suite_tasks("libero_spatial")[0])
    obs0, _ = env.reset(seed=0)
    raw0 = obs0["agentview_image"]
    # upright: the wall (bluish grey) is at the top and the wooden table at the bottom; raw: reversed
    top, bottom = upright(raw0)[:4].reshape(-1, 3).mean(0), upright(raw0)[-4:].reshape(-1, 3).mean(0)
    assert top[2] > top[0] and bottom[0] > bottom[2]
    np.testing.assert_array_equal(raw0[:4], upright(raw0)[-4:][::-1, ::-1])

    def lowest_finger_row(obs):
        img = upright(obs["agentview_image"]).astype(int)
        rows = np.nonzero(np.all(img == (70, 72, 78), axis=2).any(axis=1))[0]
        return rows.max()

    obs1 = obs0
    for _ in range(4):  # gripper goes down 8 cm: its fingers move down the upright image
        obs1, *_ = env.step(np.array([0, 0, -1, 0, 0, 0, -1.0]))
    assert lowest_finger_row(obs1) > lowest_finger_row(obs0) + 10


def test_grasp_carry_and_release_onto_plate():
    task = get_task("libero_goal", "put the red cube on the plate")
    env = SuiteEnv(task, render_images=False)
    env.reset(seed=0)
    s = env.state
    cube, plate = task.object_index("red cube"), task.object_index("plate")

    def move_to(target, grip):
        for _ in range(60):
            d = np.clip((np.asarray(target) - s.tip) / MAX_DPOS, -1, 1)
            if np.all(np.abs(d) < 1e-9):
                return
            env.step(np.r_[d, 0, 0, 0, grip])

    move_to([*s.pos[cube, :2], 0.13], -1)
    move_to([*s.pos[cube, :2], s.pos[cube, 2] + 0.03], -1)
    assert s.held == -1
    env.step(np.r_[0, 0, 0, 0, 0, 0, 1.0])  # close: attaches
    assert s.held == cube
    move_to([*s.tip[:2], 0.18], 1)
    assert s.pos[cube, 2] > 0.1  # carried
    move_to([*s.pos[plate, :2], 0.18], 1)
    move_to([*s.pos[plate, :2], 0.06], 1)
    assert not env.success()
    _, reward, terminated, _, info = env.step(np.r_[0, 0, 0, 0, 0, 0, -1.0])  # open: drops onto the plate
    assert s.held == -1 and s.support[cube] == plate
    assert terminated and reward == 1.0 and info["success"]


def test_closing_away_from_objects_grasps_nothing_and_truncates():
    task = suite_tasks("libero_spatial")[0]
    env = SuiteEnv(task, render_images=False)
    env.reset(seed=1)
    truncated = False
    for _ in range(task.max_steps):
        _, _, terminated, truncated, _ = env.step(np.r_[0, 0, 0, 0, 0, 0, 1.0])
        assert not terminated
    assert env.state.held == -1 and truncated


def test_step_before_reset_and_bad_action_are_clear_errors():
    env = SuiteEnv(suite_tasks("libero_goal")[0])
    with pytest.raises(ConfigError, match="reset"):
        env.step(np.zeros(7))
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="7 values"):
        env.step(np.zeros(6))
