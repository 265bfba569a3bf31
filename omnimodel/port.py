"""`omnimodel port`: create (or resume) a run directory and drive the graph with progress and events."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from rich.console import Console

from omnimodel import archs
from omnimodel.errors import CheckpointError, PipelineError
from omnimodel.graph.wiring import NODES, build_graph
from omnimodel.paths import cache_dir

THREAD = {"configurable": {"thread_id": "port"}, "recursion_limit": 200}


@dataclass
class PortOptions:
    """Everything `omnimodel port` was asked for; saved as port.json so --resume can continue."""

    model: str
    checkpoint: str
    run_dir: str
    quant: str = "f32"
    calib: str | None = None
    backend: str = "cpu"
    sandbox: str = "auto"
    llm: str | None = None
    max_iterations: int = 3
    unnorm_key: str | None = None
    skills_dir: str | None = None
    trust_remote_code: bool = False
    llm_budget: dict | None = None


def bundled_checkpoint(model: str) -> Path:
    """The deterministic tiny checkpoint of an architecture, made on first use in the cache."""
    arch = archs.get(model)
    path = cache_dir() / "zoo" / f"{arch.bundled_preset}-seed0"
    if not (path / "config.json").exists():
        arch.make_checkpoint(arch.bundled_preset, path, seed=0)
    return path


def new_options(model: str, checkpoint: str | None, run_dir: str | None, **kw) -> PortOptions:
    """Options of a fresh port; the run directory must not exist yet."""
    archs.get(model)  # an unknown name fails before anything is made
    ckpt = Path(checkpoint) if checkpoint else bundled_checkpoint(model)
    if not (ckpt / "config.json").exists():
        raise CheckpointError(f"{ckpt}: no config.json; pass --checkpoint a checkpoint directory")
    archs.resolve(model, ckpt)  # the checkpoint is this arch's, or the error names its arch
    run = Path(run_dir) if run_dir else Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run.exists() and any(run.iterdir()):
        raise PipelineError(f"{run}: run directory exists; use --resume {run} or choose another --run-dir")
    run.mkdir(parents=True, exist_ok=True)
    opts = PortOptions(model=model, checkpoint=str(ckpt.resolve()), run_dir=str(run.resolve()), **kw)
    (run / "port.json").write_text(json.dumps(asdict(opts), indent=2))
    return opts


def resume_options(run_dir: str) -> PortOptions:
    """Options saved by the port being resumed."""
    path = Path(run_dir) / "port.json"
    if not path.exists():
        raise PipelineError(f"{run_dir}: not a run directory (no port.json); start a new port instead")
    return PortOptions(**json.loads(path.read_text()))


def run_port(opts: PortOptions, resume: bool = False, json_events: bool = False, console: Console | None = None) -> dict:
    """Drive the graph to the end; returns report.json's content."""
    console = console or Console(stderr=True)
    run_dir = Path(opts.run_dir)
    if opts.trust_remote_code:  # the user opted in to the checkpoint's own module code
        from omnimodel.models.custom import TRUST_ENV

        os.environ[TRUST_ENV] = "1"
    conn = sqlite3.connect(run_dir / "state.sqlite", check_same_thread=False)
    try:
        graph = build_graph().compile(checkpointer=SqliteSaver(conn))
        if resume:
            snapshot = graph.get_state(THREAD)
            if not snapshot.next:
                report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").exists() else None
                if report is None:
                    raise PipelineError(f"{run_dir}: nothing to resume (no saved graph state)")
                return report
            inputs = None
            _event(json_events, console, {"event": "resume", "next": list(snapshot.next)})
        else:
            inputs = {**asdict(opts), "iteration": 0, "status": "running", "fixes": [], "timings": {}}
        t_node = time.perf_counter()
        # durability="sync": a node's checkpoint is on disk before the next node starts, so a kill
        # in the middle of a node resumes at that node.
        for update in graph.stream(inputs, THREAD, stream_mode="updates", durability="sync"):
            for node, delta in update.items():
                if node not in NODES:
                    continue
                took = time.perf_counter() - t_node
                t_node = time.perf_counter()
                _event(json_events, console, {"event": "node", "node": node, "seconds": round(took, 2), **_summary(delta)})
    finally:
        conn.close()
    report = json.loads((run_dir / "report.json").read_text())
    _event(json_events, console, {"event": "done", "status": report["status"], "run_dir": str(run_dir)})
    return report


def _summary(delta: dict | None) -> dict:
    delta = delta or {}
    return {k: delta[k] for k in ("status", "failing_module", "iteration") if k in delta}


def _event(json_events: bool, console: Console, event: dict) -> None:
    if json_events:
        print(json.dumps(event), flush=True)
    elif event["event"] == "node":
        extra = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "node", "seconds"))
        console.print(f"[green]✓[/green] {event['node']:<10} {event['seconds']:7.2f}s {extra}")
    elif event["event"] == "resume":
        console.print(f"resuming at {', '.join(event['next'])}")
    elif event["event"] == "done":
        colour = "green" if event["status"] == "ok" else "red"
        console.print(f"[{colour}]{event['status']}[/{colour}]: {event['run_dir']}/report.md")
