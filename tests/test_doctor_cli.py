"""`omnimodel doctor`: says what is missing and how to fix it, never prints key values."""

from __future__ import annotations

import os
import subprocess
import sys

from omnimodel.paths import REPO_ROOT


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "omnimodel.cli", "doctor", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


def test_doctor_without_docker_says_so_and_names_the_fix(tmp_path):
    res = _doctor(DOCKER_HOST=f"unix://{tmp_path}/no-such.sock", OPENAI_API_KEY="sk-secret-value-123")
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if "Docker engine" in line)
    assert "not running" in row and "dockerd" in row
    assert "sk-secret-value-123" not in res.stdout + res.stderr
    key_row = next(line for line in res.stdout.splitlines() if "OPENAI_API_KEY" in line)
    assert "present" in key_row


def test_doctor_strict_fails_when_the_compiler_is_missing(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    res = _doctor("--strict", PATH=str(bin_dir), ANTHROPIC_API_KEY="")
    assert res.returncode == 1
    row = next(line for line in res.stdout.splitlines() if "C/C++ compiler" in line)
    assert "apt-get install -y g++" in row
    assert "absent" in next(line for line in res.stdout.splitlines() if "ANTHROPIC_API_KEY" in line)
    relaxed = _doctor(PATH=str(bin_dir))
    assert relaxed.returncode == 0
