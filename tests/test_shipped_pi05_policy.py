"""The trained π0.5 task-suite policy shipped in the package: where it is, its layout, and that it still acts well."""

from __future__ import annotations

import subprocess
import sys

from omnimodel import eval as ev
from omnimodel.models.zoo import shipped_path

NAME = "pi05-tiny-suite"


def test_zoo_path_prints_the_shipped_lerobot_checkpoint():
    out = subprocess.run([sys.executable, "-m", "omnimodel.cli", "zoo", "path", NAME], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    path = shipped_path(NAME)
    assert out == str(path)
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json",
                 "tokenizer.json", "omnimodel.json"):  # fmt: skip
        assert (path / name).is_file(), name
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 25e6, size
    training = (path / "TRAINING.md").read_text()
    assert "omnimodel train --arch pi05" in training and "--init" in training  # every stage's command
    assert len((path / "train_log.jsonl").read_text().splitlines()) > 10


def test_shipped_pi05_policy_succeeds_closed_loop():
    """Two tasks per suite, one seeded episode each (noise from the episode seed): the policy must solve most."""
    target = shipped_path(NAME)
    policy, backend, _ = ev.load_target(target)
    assert backend == "pytorch"
    postprocess, replan = ev.action_protocol(target, policy)
    assert (postprocess, replan) == (False, 5)  # LIBERO actions, openpi's replan of 5
    tasks = [t for t in ev.suite_eval_tasks() if t.name.endswith(("plate", "basket", "bowl"))]
    picked = []
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10"):
        picked += [t for t in tasks if t.suite == suite][:2]
    res = ev.evaluate_closed_loop(policy, picked, 1, seed=0, postprocess=postprocess, show_progress=False, replan=replan)
    wins = sum(r["success"] for r in res.per_episode)
    assert wins >= 5, res.per_episode
