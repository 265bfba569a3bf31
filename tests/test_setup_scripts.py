"""Set-up scripts keep each step's output in a log file and print one line per step (the quick start stays short)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = [REPO / "scripts" / "quickstart.sh", REPO / "scripts" / "setup.sh", REPO / ".ci" / "setup_system.sh"]
NOISY = re.compile(r"\b(apt-get (update|install)|pip install|debootstrap --|build_image\.sh\s*$|toolchain build)")


def _bash(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMNIMODEL_LOG_DIR": str(tmp_path / "logs")}
    return subprocess.run(["bash", "-c", f"source {REPO / 'scripts' / 'steps.sh'}; {script}"], capture_output=True,
                          text=True, env=env, timeout=60)  # fmt: skip


def test_a_noisy_step_prints_one_line_and_logs_everything(tmp_path):
    res = _bash("step 'noisy' bash -c 'for i in $(seq 400); do echo line $i; echo err $i >&2; done'; echo after", tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.splitlines()[0].startswith("  ok  noisy (") and res.stdout.splitlines()[1:] == ["after"]
    (log,) = (tmp_path / "logs").iterdir()
    text = log.read_text()
    assert "line 400" in text and "err 400" in text


def test_a_failing_step_stops_with_the_log_tail_and_path(tmp_path):
    res = _bash("step 'broken' bash -c 'for i in $(seq 50); do echo line $i; done; exit 3'; echo never", tmp_path)
    assert res.returncode == 3 and "never" not in res.stdout
    first, *tail = res.stderr.splitlines()
    assert first.startswith("  FAIL broken (exit 3); last lines of ") and str(tmp_path / "logs") in first
    assert tail[-1] == "line 50" and len(tail) == 15


def test_every_noisy_command_of_the_setup_scripts_runs_through_step():
    for script in SCRIPTS:
        for n, line in enumerate(script.read_text().replace("\\\n", " ").splitlines(), 1):  # continuations joined
            code = line.split("#", 1)[0]
            if NOISY.search(code) and "step " not in code and ">>\"$STEP_LOG\"" not in code and "--print-tag" not in code:
                raise AssertionError(f"{script.relative_to(REPO)}:{n}: prints its whole output: {line.strip()}")
