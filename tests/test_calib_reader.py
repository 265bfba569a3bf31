"""The LIBERO-style HDF5 export round-trips through the calibration reader; selection, chunks and errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from omnimodel.calib import (
    FrameDataset,
    action_chunks,
    dataset_statistics,
    policy_actions,
    read_demos,
    select_calibration,
    subsample_frames,
)
from omnimodel.errors import CalibError
from omnimodel.suite import SuiteEnv, get_task, suite_tasks, upright
from omnimodel.suite.expert import Expert, expert_step
from omnimodel.suite.export import episode_seed, export_task


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    for suite, idx in (("libero_goal", 0), ("libero_goal", 3), ("libero_10", 0)):
        task = suite_tasks(suite)[idx]
        export_task(task, idx, root / suite / f"{task.name}_demo.hdf5", episodes=3, seed=5)
    return root


def test_libero_layout(demo_dir):
    task = suite_tasks("libero_goal")[0]
    path = demo_dir / "libero_goal" / f"{task.name}_demo.hdf5"
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert json.loads(data.attrs["problem_info"])["language_instruction"] == task.instruction
        assert data.attrs["macros_image_convention"] == "opengl"
        assert sorted(data) == ["demo_0", "demo_1", "demo_2"]
        demo = data["demo_0"]
        t = demo["actions"].shape[0]
        assert demo["actions"].shape == (t, 7)
        assert demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
        for key, shape in (("agentview_rgb", (t, 224, 224, 3)), ("eye_in_hand_rgb", (t, 224, 224, 3)),
                           ("ee_pos", (t, 3)), ("ee_ori", (t, 3)), ("gripper_states", (t, 2)),
                           ("joint_states", (t, 7))):  # fmt: skip
            assert demo["obs"][key].shape == shape, key


def test_export_round_trips_to_what_the_policy_sees(demo_dir):
    episodes = read_demos(demo_dir)
    assert len(episodes) == 9
    ep = next(
        e for e in episodes if e.suite == "libero_goal" and e.task == suite_tasks("libero_goal")[3].name
    )
    assert ep.instruction == "put the yellow ball on the plate"
    # replay the same seeded expert episode: the reader must give the upright env images and the same actions
    task = get_task("libero_goal", ep.task)
    env = SuiteEnv(task)
    obs, _ = env.reset(seed=episode_seed("demo", 5, "libero_goal", 3, int(ep.demo.split("_")[1])))
    expert = Expert(env)
    for t in range(ep.num_frames):
        if t in (0, ep.num_frames // 2, ep.num_frames - 1):
            images = ep.images(t)
            np.testing.assert_array_equal(images[0], upright(obs["agentview_image"]))
            np.testing.assert_array_equal(images[1], upright(obs["robot0_eye_in_hand_image"]))
            np.testing.assert_allclose(ep.proprio[t], obs["state"], atol=1e-6)
        action, (obs, *_rest) = expert_step(expert, env)
        np.testing.assert_allclose(ep.actions[t], action, atol=1e-6)
    assert ep.agentview.shape == (ep.num_frames, 224, 224, 3)


def test_calibration_rule_one_per_task_three_in_long(demo_dir):
    episodes = read_demos(demo_dir)
    chosen = select_calibration(episodes, seed=0)
    per_task = {}
    for ep in chosen:
        per_task[(ep.suite, ep.task)] = per_task.get((ep.suite, ep.task), 0) + 1
    assert per_task == {("libero_goal", suite_tasks("libero_goal")[0].name): 1,
                        ("libero_goal", suite_tasks("libero_goal")[3].name): 1,
                        ("libero_10", suite_tasks("libero_10")[0].name): 3}  # fmt: skip
    assert [e.demo for e in select_calibration(episodes, seed=0)] == [e.demo for e in chosen]
    seeds = {tuple(e.demo for e in select_calibration(episodes, seed=s)) for s in range(8)}
    assert len(seeds) > 1  # the seed matters
    with pytest.raises(CalibError, match="episodes-per-task"):
        select_calibration([e for e in episodes if e.demo != "demo_2"], seed=0)


def test_subsample_chunks_and_policy_convention(demo_dir):
    episodes = read_demos(demo_dir)
    total = sum(e.num_frames for e in episodes)
    assert len(subsample_frames(episodes, None)) == total
    picked = subsample_frames(episodes, 17, seed=1)
    assert len(picked) == 17 and len(set(picked)) == 17 and picked == subsample_frames(episodes, 17, seed=1)
    acts = np.arange(30, dtype=np.float32).reshape(-1, 3)[:, :1].repeat(7, 1)  # 10 distinct actions
    chunks = action_chunks(acts, 8)
    assert chunks.shape == (10, 8, 7)
    np.testing.assert_array_equal(chunks[0], acts[:8])
    np.testing.assert_array_equal(chunks[9], np.repeat(acts[9:], 8, 0))  # padded with the last action
    np.testing.assert_array_equal(chunks[5, 4:], np.repeat(acts[9:], 4, 0))
    g = policy_actions(np.array([[0, 0, 0, 0, 0, 0, -1.0], [0, 0, 0, 0, 0, 0, 1.0]]))[:, 6]
    np.testing.assert_array_equal(g, [1.0, 0.0])  # OFT: 1 open, 0 close


def test_frame_dataset_batches_and_statistics(demo_dir):
    episodes = read_demos(demo_dir)
    ds = FrameDataset(episodes, subsample_frames(episodes, 10, seed=0))
    batch = next(ds.batches(4, seed=0))
    ds.close()
    assert batch["images"].shape == (4, 2, 224, 224, 3) and batch["images"].dtype == np.uint8
    assert batch["proprio"].shape == (4, 8) and batch["actions"].shape == (4, 8, 7)
    assert set(np.unique(batch["actions"][..., 6])) <= {0.0, 1.0}
    stats = dataset_statistics(episodes)
    assert stats["action"]["mask"] == [True] * 6 + [False]
    assert stats["num_trajectories"] == 9
    assert all(lo <= hi for lo, hi in zip(stats["proprio"]["q01"], stats["proprio"]["q99"], strict=True))


def test_missing_and_broken_files_are_one_line_errors(tmp_path):
    with pytest.raises(CalibError, match="does not exist"):
        read_demos(tmp_path / "nowhere")
    with pytest.raises(CalibError, match="no \\*.hdf5"):
        read_demos(tmp_path)
    (tmp_path / "x_demo.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CalibError, match="not a readable HDF5"):
        read_demos(tmp_path)
    with h5py.File(tmp_path / "x_demo.hdf5", "w") as f:
        f.create_group("data").attrs["problem_info"] = json.dumps({"language_instruction": "do it"})
        f["data"].create_group("demo_0").create_dataset("actions", data=np.zeros((3, 7)))
    with pytest.raises(CalibError, match="lacks"):
        read_demos(tmp_path)
