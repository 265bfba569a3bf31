"""`omnimodel serve` driven by the unmodified openpi-client 0.1.2 (its own venv), tiny OFT run (4 clients x 25 requests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from test_codegen_native import ggml_prefix, native_build, tiny_run  # noqa: F401

from omnimodel import runtime
from omnimodel.serve import ObservationError, keys_for, pack, read_observation, unpack

ORACLE = Path.home() / ".cache" / "omnimodel" / "oracle-venvs" / "openpi-client-0.1.2"
ORACLE_PINS = ["openpi-client==0.1.2", "numpy==1.26.4", "msgpack==1.2.4", "websockets==17.4", "dm-tree", "pillow",
               "typing_extensions"]  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


def _oracle_python() -> Path:
    """The openpi-client venv's python, built once from PyPI (python -m venv + pip)."""
    py = ORACLE / "bin" / "python"
    if not py.exists():
        tmp = ORACLE.with_name(ORACLE.name + ".tmp")
        subprocess.run(["python3", "-m", "venv", str(tmp)], check=True)
        subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *ORACLE_PINS], check=True)
        tmp.rename(ORACLE)
    return py


def _observation(seed: int, size: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": ["put the bowl on the plate", "Open the top drawer, please!"][seed % 2],
    }


@pytest.fixture(scope="module")
def server(tiny_run):  # noqa: F811
    """`omnimodel serve` on a free port in a subprocess; yields (process, port)."""
    cmd = [
        sys.executable,
        "-m",
        "omnimodel.cli",
        "serve",
        str(tiny_run),
        "--port",
        "0",
        "--threads",
        "2",
        "--queue",
        "4",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "ws://" in line, (
        f"server did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
    )
    port = int(line.split("ws://")[1].split()[0].rsplit(":", 1)[1])
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _client(port: int, script: str, inputs=None, tmp: Path = Path("/tmp"), timeout_s: float = 300) -> dict:
    py = _oracle_python()
    require(py.exists(), "the openpi-client 0.1.2 venv")
    body = textwrap.dedent(f"""
        import json, sys, numpy as np
        from openpi_client.websocket_client_policy import WebsocketClientPolicy
        from openpi_client import msgpack_numpy
        client = WebsocketClientPolicy("127.0.0.1", {port})
        inputs = msgpack_numpy.unpackb(open(sys.argv[1], "rb").read())
    """) + textwrap.dedent(script)
    path = tmp / f"openpi_inputs_{os.getpid()}.msgpack"
    path.write_bytes(pack(inputs))
    res = subprocess.run([str(py), "-c", body, str(path)], capture_output=True, timeout=timeout_s, cwd="/tmp")
    path.unlink()
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    return unpack(res.stdout)


def test_openpi_client_gets_the_runtime_actions(server, tiny_run):  # noqa: F811
    proc, port = server
    obs = [_observation(i, 224) for i in range(3)]
    got = _client(
        port,
        """
        obs = inputs
        out = {"meta": client.get_server_metadata(), "replies": [client.infer(o) for o in obs]}
        sys.stdout.buffer.write(msgpack_numpy.packb(out))
    """,
        obs,
    )
    meta = got["meta"]
    assert meta["arch"] == "openvla-oft" and meta["torch_imported"] is False, meta
    assert (meta["action_chunk"], meta["action_dim"], meta["state_dim"]) == (8, 7, 8)
    with runtime.load(tiny_run, n_threads=2) as policy:
        for o, reply in zip(obs, got["replies"], strict=True):
            want = policy.predict_action(
                [o["observation/image"], o["observation/wrist_image"]], o["observation/state"], o["prompt"]
            )
            err = float(np.abs(reply["actions"] - want).max())
            assert reply["actions"].shape == (8, 7) and err <= 1e-5, (
                f"server vs runtime max abs err {err:.3g}"
            )
            assert reply["server_timing"]["infer_ms"] > 0
    assert not np.allclose(got["replies"][0]["actions"], got["replies"][1]["actions"]), (
        "different inputs, same actions"
    )


def test_bad_observation_gets_an_error_and_the_connection_survives(server):
    _, port = server
    good = _observation(0, 224)
    bad_key = {k: v for k, v in good.items() if k != "observation/wrist_image"}
    bad_dtype = dict(good, **{"observation/state": np.zeros(8, np.int64)})
    got = _client(
        port,
        """
        good, bad_key, bad_dtype = inputs
        errors = []
        for bad in (bad_key, bad_dtype):
            try:
                client.infer(bad)
                errors.append(None)
            except RuntimeError as exc:
                errors.append(str(exc))
        sys.stdout.buffer.write(msgpack_numpy.packb({"errors": errors, "after": client.infer(good)}))
    """,
        [good, bad_key, bad_dtype],
    )
    assert "observation/wrist_image: missing" in got["errors"][0] and "uint8" in got["errors"][0], got[
        "errors"
    ]
    assert "observation/state" in got["errors"][1] and "int64" in got["errors"][1], got["errors"]
    assert got["after"]["actions"].shape == (8, 7) and np.isfinite(got["after"]["actions"]).all()


def test_concurrent_clients_all_answered(server, tiny_run):  # noqa: F811
    _, port = server
    obs = _observation(1, 224)
    got = _client(
        port,
        f"""
        import threading
        obs = inputs
        results, errors = [], []
        def work():
            c = WebsocketClientPolicy("127.0.0.1", {port})
            for _ in range(25):
                try:
                    results.append(c.infer(obs)["actions"])
                except RuntimeError as exc:
                    errors.append(str(exc))
        ts = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        sys.stdout.buffer.write(msgpack_numpy.packb({{"results": results, "errors": errors}}))
    """,
        obs,
        timeout_s=900,  # 100 tiny steps: ~0.3 s each on 2 idle cores, far more on a shared busy machine
    )
    assert not got["errors"], got["errors"][
        :3
    ]  # 4 clients, each waiting for its reply: within the bound of 4
    with runtime.load(tiny_run, n_threads=2) as policy:
        want = policy.predict_action(
            [obs["observation/image"], obs["observation/wrist_image"]],
            obs["observation/state"],
            obs["prompt"],
        )
    assert len(got["results"]) == 100
    assert max(float(np.abs(a - want).max()) for a in got["results"]) <= 1e-5


def test_healthz_and_clean_sigint(tiny_run):  # noqa: F811
    cmd = [sys.executable, "-m", "omnimodel.cli", "serve", str(tiny_run), "--port", "0", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    port = int(line.split("ws://")[1].split()[0].rsplit(":", 1)[1])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        assert r.status == 200 and r.read().strip() == b"ok"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=30)
    rest = proc.stderr.read().strip().splitlines()
    assert rc == 0, rest
    assert rest == ["stopped after 0 requests"], rest


def test_read_observation_names_the_key():
    keys = keys_for("openvla")
    img = np.zeros((4, 4, 3), np.uint8)
    images, state, prompt = read_observation({"observation/image": img, "prompt": "go"}, keys, 4, 0)
    assert len(images) == 1 and state.size == 0 and prompt == "go"
    with pytest.raises(
        ObservationError, match=r"observation/image: expected a uint8 array of shape \(4, 4, 3\), got float32"
    ):
        read_observation({"observation/image": img.astype(np.float32), "prompt": "go"}, keys, 4, 0)
    with pytest.raises(ObservationError, match="prompt: expected a non-empty string"):
        read_observation({"observation/image": img}, keys, 4, 0)


def test_eval_through_the_server_equals_eval_of_the_run(server, tiny_run):  # noqa: F811
    """`omnimodel eval --server`'s policy: the same episodes, successes and steps as the run evaluated directly."""
    from omnimodel import eval as ev
    from omnimodel.serve_client import RemotePolicy

    _, port = server
    tasks = ev.suite_eval_tasks(["libero_goal"])[:2]
    with RemotePolicy(f"ws://127.0.0.1:{port}") as remote:
        assert remote.metadata["server"] == "omnimodel" and remote.metadata["image_keys"]
        via = ev.evaluate_closed_loop(remote, tasks, 1, seed=3, show_progress=False)
    direct = ev.evaluate_closed_loop(
        runtime.load(tiny_run, n_threads=2), tasks, 1, seed=3, show_progress=False
    )
    assert via.per_episode == direct.per_episode, (via.per_episode, direct.per_episode)
    assert sum(r["steps"] for r in via.per_episode) > 0


def test_eval_server_errors_are_one_line(tmp_path):
    def run(*args):
        res = subprocess.run(
            [sys.executable, "-m", "omnimodel.cli", "eval", *args, "--out", str(tmp_path / "e.json")],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        return res.returncode, lines

    rc, lines = run("--server", "ws://127.0.0.1:9")  # nothing listens on the discard port
    assert rc != 0 and len(lines) == 1 and "no policy server answers" in lines[0], lines
    rc, lines = run("--server", "http://127.0.0.1:9")
    assert rc != 0 and len(lines) == 1 and "expected a websocket address" in lines[0], lines
    rc, lines = run()
    assert rc != 0 and len(lines) == 1 and "--server" in lines[0], lines
    assert not (tmp_path / "e.json").exists()
