"""Containment of the Docker sandbox, against the real engine: network, time, memory, pids, writes, cleanup."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import require

from omnimodel.errors import SandboxError
from omnimodel.paths import REPO_ROOT
from omnimodel.sandbox.image import LABEL, image_tag


def _engine():
    from omnimodel.sandbox.docker_backend import docker_client

    try:
        return docker_client()
    except SandboxError:
        return None


@pytest.fixture(scope="module")
def box():
    client = _engine()
    require(client is not None, "a running Docker engine (bash .ci/setup_system.sh)")
    from omnimodel.sandbox.docker_backend import DockerSandbox

    try:
        return DockerSandbox(client=client, build_if_missing=False)
    except SandboxError:
        require(False, f"sandbox image {image_tag()} (bash sandbox/build_image.sh)")


def _ours(client, pid: int | None = None) -> list:
    label = f"{LABEL}.pid={pid or os.getpid()}"
    # The low-level listing: the high-level one inspects each container afterwards and raises
    # NotFound for one removed in between (the very removal these tests wait for).
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]


@pytest.fixture(autouse=True)
def no_container_left(request):
    yield
    if "box" in request.fixturenames:
        client = request.getfixturevalue("box").client
        left = _ours(client)
        assert left == [], f"sandbox containers left behind: {[c[:12] for c in left]}"


def test_auto_picks_docker_and_says_why(box):
    from omnimodel.sandbox import get_sandbox

    chosen = get_sandbox("auto")
    assert chosen.name == "docker" and "Docker engine answers" in chosen.reason


def test_auto_falls_back_to_local_without_engine(monkeypatch, tmp_path):
    from omnimodel.sandbox import get_sandbox

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    chosen = get_sandbox("auto")
    assert chosen.name == "local" and "not answering" in chosen.reason and "dockerd" in chosen.reason
    with pytest.raises(SandboxError, match="dockerd"):
        get_sandbox("docker")


def test_missing_image_names_the_fix(box):
    from omnimodel.sandbox.docker_backend import DockerSandbox

    with pytest.raises(SandboxError, match="build_image.sh"):
        DockerSandbox(client=box.client, image="omnimodel-sandbox:no-such-recipe", build_if_missing=False)


def test_runs_as_non_root_in_workdir_with_output(box, tmp_path):
    res = box.run(["sh", "-c", "id -u; pwd; echo oops >&2; exit 3"], tmp_path, timeout_s=20, memory_mb=128)
    out = res.stdout.split()
    assert res.backend == "docker" and res.exit_code == 3 and res.killed_by is None
    assert out[0] != "0", f"container ran as root: {res.stdout!r}"
    assert out[1] == str(tmp_path.resolve())
    assert res.stderr.strip() == "oops"


def test_network_access_fails(box, tmp_path):
    # A listener on the host's loopback: reachable from a process sharing the host network, not from
    # a container with no network (its own loopback is all it has).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        script = f"cat /proc/net/dev | tail -n +3 | cut -d: -f1; exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"
        res = box.run(["bash", "-c", script], tmp_path, timeout_s=20, memory_mb=128)
    finally:
        server.close()
    interfaces = [x.strip() for x in res.stdout.splitlines() if x.strip() and x.strip() != "CONNECTED"]
    assert interfaces == ["lo"], f"container sees interfaces {interfaces}"
    assert "CONNECTED" not in res.stdout and res.exit_code != 0


def test_timeout_killed_and_reported_within_2s(box, tmp_path):
    t0 = time.monotonic()
    res = box.run(["sleep", "60"], tmp_path, timeout_s=2, memory_mb=64)
    elapsed = time.monotonic() - t0
    assert res.killed_by == "timeout", res
    assert res.wall_s < 2 + 2 and elapsed < 2 + 2 + 1.5, f"wall {res.wall_s:.2f}s, call {elapsed:.2f}s"
    assert res.exit_code != 0


def test_memory_hog_killed_and_reported(box, tmp_path):
    hog = 'x=$(head -c 400000000 /dev/zero | tr "\\0" a); echo ${#x}'
    res = box.run(["bash", "-c", hog], tmp_path, timeout_s=60, memory_mb=64)
    assert res.killed_by == "memory", res
    assert "400000000" not in res.stdout


def test_fork_bomb_contained_and_host_responsive(box, tmp_path):
    bomb = "bomb() { bomb | bomb & }; bomb; sleep 30"
    host_latency: list[float] = []

    def probe():
        time.sleep(1.0)
        t0 = time.monotonic()
        subprocess.run(["true"], check=True)
        host_latency.append(time.monotonic() - t0)

    thread = threading.Thread(target=probe)
    thread.start()
    res = box.run(["bash", "-c", bomb], tmp_path, timeout_s=4, memory_mb=256, pids=64)
    thread.join()
    assert res.killed_by == "pids", res
    assert host_latency and host_latency[0] < 2.0, f"host took {host_latency} s to run `true` during the bomb"


def test_writes_outside_workdir_fail(box, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    script = (
        "for p in /usr/x /etc/x /x /home/x "
        + str(ro)
        + "/x; do touch $p 2>/dev/null && echo WROTE $p; done; "
        "touch ./inside && touch /tmp/scratch && echo OK"
    )
    res = box.run(["sh", "-c", script], work, timeout_s=20, memory_mb=64, ro_mounts={ro: str(ro)})
    assert "WROTE" not in res.stdout, res.stdout
    assert res.stdout.strip().endswith("OK") and (work / "inside").exists()
    assert not (ro / "x").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_container_removed_when_driver_interrupted(box, tmp_path, sig):
    script = textwrap.dedent(f"""
        import signal, sys
        # as in a terminal: a background job of a non-interactive shell (CI) inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from omnimodel.sandbox.docker_backend import DockerSandbox
        print("start", flush=True)
        DockerSandbox(build_if_missing=False).run(["sleep", "60"], Path({str(tmp_path)!r}), timeout_s=60, memory_mb=64)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    deadline = time.monotonic() + 20
    while not _ours(box.client, proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ours(box.client, proc.pid), "the child never started its container"
    proc.send_signal(sig)
    proc.wait(timeout=120)  # generous: a loaded daemon can take long to kill and remove
    assert proc.returncode != 0
    assert _ours(box.client, proc.pid) == [], f"container survived {sig.name} of its driver"


def test_ggml_program_matches_numpy_in_docker(box, tmp_path):
    from omnimodel.toolchain.selfcheck import run_selfcheck

    res = run_selfcheck(tmp_path, "cpu", box)
    assert res.sandbox == "docker" and res.backend_name == "CPU"
    assert res.max_abs_err <= 1e-5, f"matmul+softmax: max abs err {res.max_abs_err:.3g} > 1e-5"
