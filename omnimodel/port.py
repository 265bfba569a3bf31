"""`omnimodel port`: create (or resume) a run directory and drive the graph with progress and events."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from rich.console import Console

from omnimodel import archs
from omnimodel.atomic import check_writable
from omnimodel.errors import CheckpointError, ConfigError, OmniError, PipelineError
from omnimodel.graph.wiring import NODES, build_graph
from omnimodel.paths import cache_dir
from omnimodel.quantspec import QuantSpec

THREAD = {"configurable": {"thread_id": "port"}, "recursion_limit": 200}
FAILED = "FAILED"  # marker file of a failed run: its one line is the reason
BACKENDS = ("cpu", "cuda")


class FailedRunError(PipelineError):
    """A stage of the port failed; the run dir is marked FAILED with this one-line reason."""

    exit_code = 1


@dataclass
class PortOptions:
    """Everything `omnimodel port` was asked for; saved as port.json so --resume can continue."""

    model: str
    checkpoint: str
    run_dir: str
    quant: str = "f32"  # canonical QuantSpec text
    calib: str | None = None
    calib_frames: int | None = None  # calibration frame cap (None: every frame)
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


def check_inputs(model: str, checkpoint: str | None, quant: str, calib: str | None, backend: str, sandbox: str) -> tuple[Path, QuantSpec]:
    """Everything a port needs, checked before anything is written: arch, quant spec, calibration, backend, sandbox, checkpoint."""
    from omnimodel.sandbox import KINDS

    archs.get(model)  # an unknown name fails naming the known ones
    spec = QuantSpec.parse(quant)
    if spec.method == "actquant" and spec.budget is None:
        raise ConfigError(f"--quant {quant}: actquant needs a bits-per-weight budget, e.g. --quant actquant:3.0")
    if spec.needs_calibration and not calib:
        raise ConfigError(
            f"--quant {spec} needs calibration demonstrations: pass --calib DIR (write some with `omnimodel suite export --out DIR`)"
        )
    if calib:
        from omnimodel.calib import read_demos, select_calibration

        select_calibration(read_demos(calib))  # readable, LIBERO layout, enough episodes (CalibError otherwise)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if sandbox not in KINDS:
        raise ConfigError(f"unknown sandbox {sandbox!r}: use one of {', '.join(KINDS)}")
    _check_sandbox(sandbox)
    if checkpoint and not Path(checkpoint).is_dir():
        raise CheckpointError(f"{checkpoint}: no such checkpoint directory; pass --checkpoint DIR (or leave it out for the bundled one)")
    ckpt = Path(checkpoint) if checkpoint else bundled_checkpoint(model)
    if not (ckpt / "config.json").exists():
        raise CheckpointError(f"{ckpt}: no config.json; pass --checkpoint a checkpoint directory")
    arch = archs.resolve(model, ckpt)  # the checkpoint is this arch's, or the error names its arch
    arch.check_checkpoint(ckpt)  # config.json's fields (and the arch's cheap file checks) before the run dir exists
    return ckpt, spec


def _check_sandbox(kind: str) -> None:
    """The sandbox can build: Docker answers (--sandbox docker), or the local tools exist (local, or auto without Docker)."""
    import shutil as sh

    from omnimodel.errors import SandboxError
    from omnimodel.sandbox.docker_backend import DockerSandbox, docker_client

    if kind == "docker":
        docker_client()  # SandboxError naming the fix when the engine does not answer; the image is built on first use
        return
    if kind == "auto":
        try:
            DockerSandbox(client=docker_client(), build_if_missing=False)
            return  # auto picks Docker
        except SandboxError:
            pass  # auto falls back to the local sandbox
    missing = [t for t in ("cmake",) if sh.which(t) is None]
    if not any(sh.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    if missing:
        raise SandboxError(
            f"the local sandbox (--sandbox {kind}) needs {' and '.join(missing)}; install them or start Docker (see omnimodel doctor)"
        )


def new_options(model: str, checkpoint: str | None, run_dir: str | None, force: bool = False, **kw) -> PortOptions:
    """Options of a fresh port, every input checked first; the run directory must not exist yet (or --force)."""
    ckpt, spec = check_inputs(
        model, checkpoint, kw.get("quant", "f32"), kw.get("calib"), kw.get("backend", "cpu"), kw.get("sandbox", "auto")
    )
    kw["quant"] = str(spec)
    run = check_writable(Path(run_dir) if run_dir else Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}", want_dir=True)
    if run.exists() and any(run.iterdir()):
        if not force:
            raise PipelineError(existing_run_message(run))
        if not (run / "port.json").exists():
            raise PipelineError(f"{run}: not a run directory (no port.json), so --force will not delete it; choose another --out")
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    opts = PortOptions(model=model, checkpoint=str(ckpt.resolve()), run_dir=str(run.resolve()), **kw)
    (run / "port.json").write_text(json.dumps(asdict(opts), indent=2))
    return opts


def existing_run_message(run: Path) -> str:
    """One line on what `port` does with a run dir that already exists."""
    reason = failed_reason(run)
    if reason is not None:
        return f"{run} holds a failed port ({reason}); pass --force to replace it, or --resume {run} to see its error"
    return f"{run}: run directory exists; use --resume {run}, --force to replace it, or choose another --out"


def failed_reason(run_dir: str | Path) -> str | None:
    """The one-line reason of a run marked FAILED, or None."""
    marker = Path(run_dir) / FAILED
    return marker.read_text().strip() if marker.exists() else None


def mark_failed(run_dir: str | Path, reason: str) -> str:
    """Mark a failed run: model.gguf becomes model.gguf.failed, FAILED holds the reason; returns the one line."""
    from omnimodel.graph.nodes.reporter import first_line

    run_dir = Path(run_dir)
    line = first_line(reason, 400) or "the port failed"
    gguf = run_dir / "model.gguf"
    if gguf.exists():
        gguf.replace(run_dir / "model.gguf.failed")
        line = f"{line} (model.gguf renamed model.gguf.failed)"
    (run_dir / FAILED).write_text(line + "\n")
    return line


def resume_options(run_dir: str) -> PortOptions:
    """Options saved by the port being resumed; a run marked FAILED re-reports its one-line error."""
    path = Path(run_dir) / "port.json"
    if not path.exists():
        raise PipelineError(f"{run_dir}: not a run directory (no port.json); start a new port instead")
    reason = failed_reason(run_dir)
    if reason is not None:
        raise FailedRunError(f"{run_dir} failed: {reason}; fix the cause and start again with --force")
    return PortOptions(**json.loads(path.read_text()))


def run_port(opts: PortOptions, resume: bool = False, json_events: bool = False, console: Console | None = None) -> dict:
    """Drive the graph to the end; returns report.json's content. A failed stage marks the run FAILED."""
    console = console or Console(stderr=True)
    run_dir = Path(opts.run_dir)
    if opts.trust_remote_code:  # the user opted in to the checkpoint's own module code
        from omnimodel.models.custom import TRUST_ENV

        os.environ[TRUST_ENV] = "1"
    conn = sqlite3.connect(run_dir / "state.sqlite", check_same_thread=False)
    graph = build_graph().compile(checkpointer=SqliteSaver(conn))
    try:
        report = _drive(graph, opts, run_dir, resume, json_events, console)
    except OmniError as exc:
        stage = _stage_at(graph)
        line = mark_failed(run_dir, f"{stage}: {exc}" if stage else str(exc))
        _event(json_events, console, {"event": "node", "node": stage or "port", "seconds": 0.0, "status": "failed"})
        raise FailedRunError(line) from exc
    except Exception as exc:  # a bug, not a user error: mark the run, keep the traceback
        stage = _stage_at(graph)
        mark_failed(run_dir, f"{stage or 'port'}: internal error {type(exc).__name__}: {exc}")
        raise
    finally:
        conn.close()
    if report["status"] != "ok":
        report["reason"] = mark_failed(run_dir, report.get("reason") or report.get("error") or "the port failed")
    _event(json_events, console, {"event": "done", "status": report["status"], "run_dir": str(run_dir), "report": report})
    return report


def _drive(graph, opts: PortOptions, run_dir: Path, resume: bool, json_events: bool, console: Console) -> dict:
    if resume:
        snapshot = graph.get_state(THREAD)
        if not snapshot.next:
            if not (run_dir / "report.json").exists():
                raise PipelineError(f"{run_dir}: nothing to resume (no saved graph state)")
            return json.loads((run_dir / "report.json").read_text())
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
    return json.loads((run_dir / "report.json").read_text())


def _stage_at(graph) -> str | None:
    """The node the graph was in when it stopped (the one that raised)."""
    try:
        nxt = graph.get_state(THREAD).next
    except Exception:  # noqa: BLE001 - only used to name the stage in a message
        return None
    return nxt[0] if nxt else None


def summary_lines(report: dict, run_dir: str) -> list[str]:
    """The port's last three lines: status; worst module and its cosine; end-to-end error, bits per weight, GGUF size."""
    if report["status"] == "ok":
        status = f"ok: {run_dir}/report.md"
    else:
        status = f"FAILED: {report.get('reason') or report.get('error')} (see {run_dir}/report.md)"
    scored = [m for m in report.get("modules", []) if isinstance(m.get("cosine"), float)]
    if scored:
        worst = min(scored, key=lambda m: (m["cosine"] == m["cosine"], m["cosine"]))  # NaN first
        line2 = f"worst module: {worst['name']} cosine {worst['cosine']:.7f} ({len(scored)} modules compared)"
    else:
        line2 = "worst module: none compared (the native build did not run)"
    e2e = report.get("end_to_end") or {}
    gguf = report.get("gguf") or {}
    err = e2e.get("action_max_abs_err")
    err_text = f"action max abs err {err:.3g} (cosine {e2e.get('action_cosine'):.6f})" if isinstance(err, float) else "no end-to-end result"
    bpw = gguf.get("bpw")
    size = gguf.get("bytes")
    gguf_text = f"{bpw:.3f} bits/weight, GGUF {size / 1e6:.2f} MB" if bpw is not None and size else "no GGUF"
    return [f"port {status}", line2, f"end to end: {err_text}; {gguf_text}"]


def _summary(delta: dict | None) -> dict:
    delta = delta or {}
    return {k: delta[k] for k in ("status", "failing_module", "iteration") if k in delta}


def _event(json_events: bool, console: Console, event: dict) -> None:
    if json_events:
        if "report" in event:  # the done event names the failure reason, not the whole report
            event = {**{k: v for k, v in event.items() if k != "report"}, "reason": event["report"].get("reason")}
        print(json.dumps(event), flush=True)
    elif event["event"] == "node":
        extra = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "node", "seconds", "status"))
        failed = event.get("status") == "failed" and event["node"] != "reporter"  # the reporter only files it
        mark = "[red]✗[/red]" if failed else "[green]✓[/green]"
        console.print(f"{mark} {event['node']:<10} {event['seconds']:7.2f}s {extra}".rstrip(), highlight=False)
    elif event["event"] == "resume":
        console.print(f"resuming at {', '.join(event['next'])}")
    elif event["event"] == "done":
        colour = "green" if event["status"] == "ok" else "red"
        first, *rest = summary_lines(event["report"], event["run_dir"])
        console.print(f"[{colour}]{first}[/{colour}]", highlight=False)
        for line in rest:
            console.print(line, highlight=False)
