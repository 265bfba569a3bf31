"""`omnimodel suite export` and `omnimodel eval` through the real command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from omnimodel.calib import read_demos
from omnimodel.cli import app


def test_suite_export_writes_readable_libero_files(tmp_path):
    res = CliRunner().invoke(app, ["suite", "export", "--out", str(tmp_path / "d"), "--episodes-per-task", "1",
                                   "--seed", "3", "--suites", "libero_goal"])  # fmt: skip
    assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "d" / "libero_goal").glob("*_demo.hdf5"))
    assert len(files) == 10
    episodes = read_demos(tmp_path / "d")
    assert len(episodes) == 10 and {e.suite for e in episodes} == {"libero_goal"}


def test_eval_rejects_a_directory_that_is_no_target(tmp_path):
    res = CliRunner().invoke(app, ["eval", str(tmp_path), "--out", str(tmp_path / "eval.json")])
    assert res.exit_code != 0
    assert not (tmp_path / "eval.json").exists()
    assert "config.json" in str(res.exception) or "config.json" in res.output


def test_suite_list_prints_forty_tasks():
    res = CliRunner().invoke(app, ["suite", "list"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 40 and json.dumps(lines)  # one line per task
