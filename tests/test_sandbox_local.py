"""The local sandbox: limits enforced by rlimits and the watchdog, group kill, secrets stripped, GGML program."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import require

from omnimodel.paths import REPO_ROOT
from omnimodel.sandbox import get_sandbox
from omnimodel.sandbox.local import _can_unshare_net


@pytest.fixture(scope="module")
def box():
    return get_sandbox("local")


def test_output_exit_code_and_reason(box, tmp_path):
    res = box.run(["sh", "-c", "pwd; echo e >&2; exit 7"], tmp_path, timeout_s=10, memory_mb=256)
    assert (res.exit_code, res.stdout.strip(), res.stderr.strip()) == (7, str(tmp_path.resolve()), "e")
    assert res.backend == "local" and res.killed_by is None and "local" in box.reason


def test_timeout_kills_whole_group_within_2s(box, tmp_path):
    t0 = time.monotonic()
    res = box.run(
        ["sh", "-c", "sleep 100 & echo $! > child.pid; sleep 100"], tmp_path, timeout_s=1.5, memory_mb=256
    )
    elapsed = time.monotonic() - t0
    assert res.killed_by == "timeout" and elapsed < 1.5 + 2
    child = int((tmp_path / "child.pid").read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fin:
            return fin.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_to_driver_kills_the_command(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from omnimodel.sandbox.local import LocalSandbox
        LocalSandbox().run(["sh", "-c", "echo $$ > cmd.pid; sleep 60"], Path({str(tmp_path)!r}),
                           timeout_s=60, memory_mb=256)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    pid_file = tmp_path / "cmd.pid"
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert _alive(child)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    time.sleep(0.2)
    assert proc.returncode != 0 and not _alive(child), "the sandboxed command outlived its driver"


def test_memory_limit_reported(box, tmp_path):
    res = box.run(
        [sys.executable, "-c", "b = bytearray(800 * 2**20); print(len(b))"],
        tmp_path,
        timeout_s=30,
        memory_mb=300,
    )
    assert res.killed_by == "memory", res
    assert str(800 * 2**20) not in res.stdout


def test_process_limit_kills(box, tmp_path):
    spawn = "for i in $(seq 200); do sleep 20 & done; wait"
    res = box.run(["bash", "-c", spawn], tmp_path, timeout_s=15, memory_mb=512, pids=20)
    assert res.killed_by == "pids" or (res.exit_code != 0 and "unavailable" in res.stderr), res
    assert res.wall_s < 10


def test_network_cut_when_root(box, tmp_path):
    require(_can_unshare_net(), "root with `unshare --net` for the local sandbox's network cut")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        res = box.run(
            ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"],
            tmp_path,
            timeout_s=10,
            memory_mb=256,
        )
    finally:
        server.close()
    assert "CONNECTED" not in res.stdout and res.exit_code != 0


def test_llm_keys_not_passed(box, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-should-not-leak")
    res = box.run(["sh", "-c", "env"], tmp_path, timeout_s=10, memory_mb=256, env={"OMNI_X": "1"})
    assert "sk-test-should-not-leak" not in res.stdout and "OMNI_X=1" in res.stdout


def test_ggml_program_matches_numpy_locally(box, tmp_path):
    require(shutil.which("c++") is not None and shutil.which("cmake") is not None, "a C++ compiler and cmake")
    from omnimodel.toolchain.selfcheck import run_selfcheck

    res = run_selfcheck(tmp_path, "cpu", box)
    assert res.sandbox == "local" and res.backend_name == "CPU"
    assert res.max_abs_err <= 1e-5, f"matmul+softmax: max abs err {res.max_abs_err:.3g} > 1e-5"
