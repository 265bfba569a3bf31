"""The trained task-suite policy shipped in the package: where it is, its layout, and that it still acts well."""

from __future__ import annotations

import json
import subprocess
import sys

from omnimodel import eval as ev
from omnimodel.models.zoo import shipped_path

NAME = "openvla-oft-tiny-suite"


def test_zoo_path_prints_the_shipped_checkpoint():
    out = subprocess.run([sys.executable, "-m", "omnimodel.cli", "zoo", "path", NAME], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    path = shipped_path(NAME)
    assert out == str(path)
    assert (path / "config.json").is_file() and (path / "model.safetensors.index.json").is_file()
    assert list(path.glob("action_head--*_checkpoint.pt")) and list(path.glob("proprio_projector--*_checkpoint.pt"))
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 25e6, size
    training = (path / "TRAINING.md").read_text()
    assert "omnimodel train" in training and "--init" in training  # the exact commands of every stage
    assert len((path / "train_log.jsonl").read_text().splitlines()) > 10
    stats = json.loads((path / "dataset_statistics.json").read_text())
    assert len(stats) == 1


def test_shipped_policy_succeeds_closed_loop():
    """Two tasks per suite, one seeded episode each: the trained policy (~90% in the full eval) must solve most."""
    policy, backend, bpw = ev.load_target(shipped_path(NAME))
    assert backend == "pytorch"
    tasks = [t for t in ev.suite_eval_tasks() if t.name.endswith(("plate", "basket", "bowl"))]
    picked = []
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10"):
        picked += [t for t in tasks if t.suite == suite][:2]
    res = ev.evaluate_closed_loop(policy, picked, 1, seed=0, show_progress=False)
    wins = sum(r["success"] for r in res.per_episode)
    assert wins >= 5, res.per_episode
