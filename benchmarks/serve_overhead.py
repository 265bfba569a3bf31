"""Policy-server overhead on localhost: the native step timed inside `omnimodel serve` vs the client round trip.

The server runs as `omnimodel serve RUN_DIR` in its own process; this process is the client and
speaks openpi's wire format (msgpack-numpy over a websocket, as openpi-client's
WebsocketClientPolicy does). Per request: `round_trip_ms` (send to reply, client clock),
`infer_ms` (the server's own timing of the native step: prompt, ctypes call, forward) and
`overhead_ms = round_trip_ms - infer_ms` (serialisation, websocket, queue, thread hop). The
baseline, measured in the same run, is the same step in-process through omnimodel.runtime with no
server. Goal: overhead under 2 ms for the tiny model.

  python benchmarks/serve_overhead.py --run RUN_DIR --threads 2 -n 200
  python benchmarks/serve_overhead.py --make-run /tmp/serve_bench   # zoo make + port of openvla-oft-tiny first
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _observation(size: int, state_dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    obs = {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "prompt": "put the black bowl on the plate",
    }
    if state_dim:
        obs["observation/state"] = rng.normal(size=state_dim).astype(np.float32)
    return obs


def _stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {
        "median": statistics.median(xs),
        "p90": xs[int(0.9 * (len(xs) - 1))],
        "min": xs[0],
        "mean": statistics.fmean(xs),
    }


def make_run(root: Path) -> Path:
    """A tiny OFT port (zoo make + omnimodel port), reused when already there."""
    run = root / "run"
    if (run / "report.json").exists():
        return run
    cli = [sys.executable, "-m", "omnimodel.cli"]
    subprocess.run([*cli, "zoo", "make", "openvla-oft-tiny", str(root / "ck")], check=True, cwd=REPO)
    subprocess.run(
        [*cli, "port", "openvla-oft", "--checkpoint", str(root / "ck"), "--out", str(run)],
        check=True,
        cwd=REPO,
    )
    return run


def in_process(run: Path, threads: int, n: int, warmup: int) -> dict:
    """The baseline: the same observation through omnimodel.runtime in this process."""
    from omnimodel import runtime

    with runtime.load(run, n_threads=threads) as policy:
        obs = _observation(policy.image_size, policy.proprio_dim)
        images = [obs["observation/image"], obs["observation/wrist_image"]]
        state = obs.get("observation/state", np.zeros(0, np.float32))
        for _ in range(warmup):
            policy.predict_action(images, state, obs["prompt"])
        ms = []
        for _ in range(n):
            t0 = time.perf_counter()
            policy.predict_action(images, state, obs["prompt"])
            ms.append((time.perf_counter() - t0) * 1e3)
        return {"step_ms": _stats(ms), "image_size": policy.image_size, "state_dim": policy.proprio_dim}


def through_server(run: Path, threads: int, n: int, warmup: int, size: int, state_dim: int) -> dict:
    """`omnimodel serve` in a subprocess, driven from here with openpi's wire format."""
    from websockets.sync.client import connect

    from omnimodel.serve import pack, unpack

    cmd = [sys.executable, "-m", "omnimodel.cli", "serve", str(run), "--port", "0", "--threads", str(threads)]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        if "ws://" not in line:
            raise SystemExit(f"server did not start: {line}")
        port = int(line.split("ws://")[1].split()[0].rsplit(":", 1)[1])
        obs = pack(_observation(size, state_dim))
        rt, infer, queue = [], [], []
        with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
            unpack(ws.recv())  # metadata
            for i in range(warmup + n):
                t0 = time.perf_counter()
                ws.send(obs)
                reply = unpack(ws.recv())
                dt = (time.perf_counter() - t0) * 1e3
                if i >= warmup:
                    rt.append(dt)
                    infer.append(reply["server_timing"]["infer_ms"])
                    queue.append(reply["server_timing"].get("queue_ms", 0.0))
        overhead = [a - b for a, b in zip(rt, infer, strict=True)]
        return {"round_trip_ms": _stats(rt), "infer_ms": _stats(infer), "queue_ms": _stats(queue),
                "overhead_ms": _stats(overhead), "request_bytes": len(obs)}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a finished port of the tiny model")
    ap.add_argument(
        "--make-run", type=Path, help="make the tiny port under this folder first (if --run is not given)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS / "serve_overhead.json")
    args = ap.parse_args()
    run = args.run or (make_run(args.make_run) if args.make_run else None)
    if run is None:
        raise SystemExit("pass --run RUN_DIR or --make-run DIR")
    load_before = os.getloadavg()
    base = in_process(run, args.threads, args.n, args.warmup)
    srv = through_server(run, args.threads, args.n, args.warmup, base["image_size"], base["state_dim"])
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "run": str(run), "threads": args.threads, "n": args.n, "warmup": args.warmup,
        "in_process": base, "server": srv,
        "ratio_round_trip_to_in_process": srv["round_trip_ms"]["median"] / base["step_ms"]["median"],
        "goal_overhead_ms": 2.0, "goal_met": srv["overhead_ms"]["median"] < 2.0,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        ("in-process step (baseline)", base["step_ms"]),
        ("server: native step (infer_ms)", srv["infer_ms"]),
        ("server: client round trip", srv["round_trip_ms"]),
        ("server: overhead (round trip - infer)", srv["overhead_ms"]),
        ("server: queue wait", srv["queue_ms"]),
    ]
    print(f"{'ms, ' + str(args.n) + ' requests':40s} {'median':>8s} {'p90':>8s} {'min':>8s}")
    for name, s in rows:
        print(f"{name:40s} {s['median']:8.3f} {s['p90']:8.3f} {s['min']:8.3f}")
    print(f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"round trip / in-process step: {result['ratio_round_trip_to_in_process']:.3f}x; "
          f"overhead goal < 2 ms: {'met' if result['goal_met'] else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
