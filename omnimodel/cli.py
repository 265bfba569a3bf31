"""The `omnimodel` command line: port, quantize, eval, bench, inspect, doctor, skills, kb, zoo, suite."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console

from omnimodel.atomic import check_writable
from omnimodel.errors import ConfigError, OmniError
from omnimodel.quantspec import FORMS as QUANT_FORMS

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
zoo_app = typer.Typer(no_args_is_help=True, help="Model presets and checkpoints.")
app.add_typer(zoo_app, name="zoo")
console = Console(stderr=True, soft_wrap=True)
CALIB_FRAMES_HELP = (
    "Calibration frames to subsample (default 256: on the tiny suite its HSIC sensitivities rank the "
    "matrices as 1024 frames do, Spearman 0.998; 0: every frame). Each frame costs one more pass per stage."
)


def _show_progress(logger: str) -> None:
    """Print a library's INFO progress lines (one per stage) on stderr, without the level prefix."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    log = logging.getLogger(logger)
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False


def _frame_cap(frames: int | None) -> int | None:
    from actquant_plugin.calibration import frame_cap

    return frame_cap(frames)


# ---------------------------------------------------------------- zoo
@zoo_app.command("make")
def zoo_make(
    preset: str = typer.Argument(..., help="Preset name (`omnimodel archs` lists them)."),
    out_dir: Path = typer.Argument(..., help="Directory to write the checkpoint into."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initialisation."),
    sets: list[str] | None = typer.Option(
        None,
        "--set",
        help="Custom size: KEY=VALUE in config.json, e.g. text_config.num_hidden_layers=4 (repeatable).",
    ),
) -> None:
    """Write a deterministic random-init checkpoint of a preset in its architecture's released layout."""
    from omnimodel import archs

    arch = archs.for_preset(preset)
    if sets and not arch.takes_sets():
        raise ConfigError(f"zoo make --set: the {arch.name} presets take no custom sizes yet; drop --set")
    path = arch.make_checkpoint(preset, out_dir, seed=seed, **({"sets": tuple(sets)} if sets else {}))
    console.print(f"wrote {preset} checkpoint to {path}" + (f" ({', '.join(sets)})" if sets else ""))


@zoo_app.command("info")
def zoo_info(
    target: str = typer.Argument(..., help="Preset name or checkpoint directory."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable counts."),
) -> None:
    """Print the module tree summary and parameter counts per component."""
    from omnimodel import archs
    from omnimodel.models import zoo

    arch = archs.for_checkpoint(target) if Path(target).is_dir() else archs.for_preset(target)
    info = arch.model_info(target)
    if as_json:
        typer.echo(json.dumps({"total": info.total, "components": info.components}))
    else:
        typer.echo(zoo.format_info(info))


@zoo_app.command("path")
def zoo_path(name: str = typer.Argument(..., help="Name of a shipped checkpoint.")) -> None:
    """Print the directory of a checkpoint shipped inside the package."""
    from omnimodel.models import zoo

    typer.echo(str(zoo.shipped_path(name)))


@app.command("port")
def port(
    model: str | None = typer.Argument(None, help="Architecture (`omnimodel archs` lists them)."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Checkpoint directory (default: the bundled tiny one)."
    ),
    quant: str = typer.Option("f32", "--quant", help=f"One of {QUANT_FORMS}."),
    calib: Path | None = typer.Option(
        None, "--calib", help="Calibration demonstrations (actquant, imatrix)."
    ),
    calib_frames: int | None = typer.Option(None, "--calib-frames", help=CALIB_FRAMES_HELP),
    backend: str = typer.Option("cpu", "--backend", help="cpu|cuda"),
    sandbox: str = typer.Option("auto", "--sandbox", help="docker|local|auto"),
    llm: str | None = typer.Option(None, "--llm", help="openai:MODEL|anthropic:MODEL|record:P:M|replay:FILE"),
    run_dir: Path | None = typer.Option(
        None, "--out", "--run-dir", help="Run directory (default runs/<model>-<time>)."
    ),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the port in RUN_DIR."),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing run directory (e.g. a failed port)."
    ),
    max_iterations: int = typer.Option(3, "--max-iterations", help="Reflector iterations before giving up."),
    unnorm_key: str | None = typer.Option(None, "--unnorm-key", help="dataset_statistics.json key."),
    skills_dir: Path | None = typer.Option(None, "--skills-dir", help="Use this skills/ folder."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable events."),
    llm_max_calls: int | None = typer.Option(
        None, "--llm-max-calls", help="LLM budget: calls per run (default 40)."
    ),
    llm_max_tokens: int | None = typer.Option(
        None, "--llm-max-tokens", help="LLM budget: tokens per run (default 2M)."
    ),
    llm_max_seconds: float | None = typer.Option(
        None, "--llm-max-seconds", help="LLM budget: wall seconds (default 3600)."
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Run module code shipped inside the checkpoint (read it first)."
    ),
) -> None:
    """Port a PyTorch policy to a native GGML build at numerical parity."""
    from omnimodel import port as port_mod

    _show_progress(
        "actquant_plugin"
    )  # an ActQuant converter stage reports each of its stages (silent otherwise)
    if resume:
        opts = port_mod.resume_options(str(resume))
    else:
        if not model:
            from omnimodel import archs

            raise ConfigError(
                f"port needs an architecture: one of {', '.join(archs.names())} (or --resume RUN_DIR)"
            )
        opts = port_mod.new_options(
            model,
            str(checkpoint) if checkpoint else None,
            str(run_dir) if run_dir else None,
            force=force,
            quant=quant,
            calib=str(calib) if calib else None,
            calib_frames=_frame_cap(calib_frames) if calib else None,
            backend=backend,
            sandbox=sandbox,
            llm=llm,
            max_iterations=max_iterations,
            unnorm_key=unnorm_key,
            skills_dir=str(skills_dir) if skills_dir else None,
            llm_budget={
                k: v
                for k, v in (
                    ("max_calls", llm_max_calls),
                    ("max_tokens", llm_max_tokens),
                    ("max_seconds", llm_max_seconds),
                )
                if v is not None
            }
            or None,
            trust_remote_code=trust_remote_code,
        )
    report = port_mod.run_port(opts, resume=resume is not None, json_events=as_json, console=console)
    if report["status"] != "ok":  # the run dir is marked FAILED; the summary's first line says why
        if as_json:
            console.print(f"[red]error:[/red] {report.get('reason')}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)


@app.command("archs")
def archs_list(as_json: bool = typer.Option(False, "--json", help="Print machine-readable entries.")) -> None:
    """List the registered architectures, their presets and the preset the quick start ports."""
    from omnimodel import archs

    rows = [
        {
            "name": a.name,
            "presets": list(a.presets()),
            "bundled": a.bundled_preset,
            "description": a.description,
        }
        for a in archs.registry().values()
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(
            f"{r['name']:<14} {r['description']}\n{'':<14} presets: {', '.join(r['presets'])} (bundled: {r['bundled']})"
        )


# ---------------------------------------------------------------- doctor / toolchain
toolchain_app = typer.Typer(no_args_is_help=True, help="The pinned GGML source and its cached builds.")
app.add_typer(toolchain_app, name="toolchain")


@app.command("doctor")
def doctor(
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a required component is missing."),
) -> None:
    """Show what is present and missing (compiler, GGML, Docker, CUDA, LLM keys) and how to fix each."""
    from rich.console import Console as RichConsole

    from omnimodel.doctor import render, run_checks

    checks = run_checks()
    RichConsole().print(render(checks))
    if strict and any(c.required and not c.ok for c in checks):
        raise typer.Exit(1)


@toolchain_app.command("build")
def toolchain_build(
    backend: str = typer.Option("cpu", "--backend", help="cpu|cuda"),
    sandbox: str = typer.Option("auto", "--sandbox", help="docker|local|auto (cuda needs local)"),
    check: bool = typer.Option(
        False, "--check", help="Then build and run a matmul+softmax program and compare to numpy."
    ),
    llama: bool = typer.Option(
        True, "--llama/--no-llama", help="Also libllama (the policy's tokenizer), from the same source."
    ),
) -> None:
    """Build (or reuse) the GGML libraries (and libllama) for a backend; print the prefix, key and timings."""
    import tempfile
    import time

    from omnimodel.sandbox import get_sandbox
    from omnimodel.toolchain import ensure_ggml_build

    box = get_sandbox(sandbox)
    console.print(f"sandbox: {box.name} ({box.reason})")
    t0 = time.monotonic()
    build = ensure_ggml_build(backend, box)
    typer.echo(
        json.dumps(
            {
                "prefix": str(build.prefix),
                "backend": build.backend,
                "key": build.key,
                "seconds": round(time.monotonic() - t0, 3),
                "timings": build.info.get("timings"),
            }
        )
    )
    if llama:
        from omnimodel.toolchain.llama import ensure_llama_build

        t0 = time.monotonic()
        lb = ensure_llama_build(build, box)
        typer.echo(
            json.dumps(
                {"llama_prefix": str(lb.prefix), "key": lb.key, "seconds": round(time.monotonic() - t0, 3)}
            )
        )
    if check:
        from omnimodel.toolchain.selfcheck import run_selfcheck

        with tempfile.TemporaryDirectory(prefix="omnimodel-selfcheck-") as tmp:
            res = run_selfcheck(Path(tmp), backend, box)
        typer.echo(json.dumps({"selfcheck": res.__dict__}))
        if res.max_abs_err > 1e-5:
            console.print(f"[red]self-check max abs err {res.max_abs_err:.3g} > 1e-5[/red]")
            raise typer.Exit(1)


# ---------------------------------------------------------------- kb, skills (helper D)
kb_app = typer.Typer(no_args_is_help=True, help="Knowledge base: GGML API notes, skills, converted models.")
app.add_typer(kb_app, name="kb")
skills_app = typer.Typer(no_args_is_help=True, help="Skills: hand-written and learned module ports.")
app.add_typer(skills_app, name="skills")


@kb_app.command("search")
def kb_search(
    query: str = typer.Argument(..., help="Words or a symbol name, e.g. 'ggml_mul_mat' or 'layer norm'."),
    limit: int = typer.Option(10, "--limit", help="How many hits to print."),
    run: Path | None = typer.Option(None, "--run", help="Also search this run's cpp/ sources."),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON lines."),
) -> None:
    """Ranked symbol search over skills/, knowledge_base/ and a run's sources."""
    from omnimodel.kb.index import search

    for hit in search(query, limit=limit, run_dir=run):
        typer.echo(json.dumps(hit.to_dict()) if as_json else hit.one_line())


@kb_app.command("build")
def kb_build(
    run: Path | None = typer.Option(None, "--run", help="Also index this run's cpp/ sources."),
) -> None:
    """Build (or refresh) the cached knowledge-base index."""
    from omnimodel.kb.index import build_index

    kb = build_index(run_dir=run)
    console.print(f"indexed {len(kb.symbols)} symbols from {', '.join(str(r) for r in kb.roots)}")


@kb_app.command("ggml-notes")
def kb_ggml_notes(
    source: Path | None = typer.Option(None, "--source", help="GGML source root (default: the pinned one)."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Output folder (default knowledge_base/ggml_api)."
    ),
) -> None:
    """Regenerate the GGML API notes from the pinned ggml headers."""
    from omnimodel.kb.ggml_notes import write_ggml_notes

    for path in write_ggml_notes(source, out_dir):
        console.print(f"wrote {path}")


@skills_app.command("list")
def skills_list(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable entries."),
) -> None:
    """List installed skills with version, provenance and what they apply to."""
    from omnimodel.skills import load_skills

    for skill in load_skills():  # invalid folders are reported as warnings
        applies = [m.to_dict() for m in skill.applies_to]
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "name": skill.name,
                        "version": skill.version,
                        "provenance": skill.provenance,
                        "applies_to": applies,
                        "description": skill.description,
                    },
                    default=str,
                )
            )
        else:
            typer.echo(f"{skill.name}  v{skill.version}  {skill.provenance}  {json.dumps(applies)}")


@skills_app.command("show")
def skills_show(name: str = typer.Argument(..., help="Skill name.")) -> None:
    """Print a skill's SKILL.md, tensor map and files."""
    from omnimodel.skills import SkillError, load_skills

    found = [s for s in load_skills() if s.name == name]
    if not found:
        raise SkillError(f"no skill named {name!r}; see `omnimodel skills list`")
    skill = found[0]
    typer.echo((skill.path / "SKILL.md").read_text(encoding="utf-8").rstrip())
    typer.echo("\ntensor map:")
    for param, entry in skill.tensor_map.items():
        typer.echo(f"  {param} -> {entry.gguf} {list(entry.transforms) if entry.transforms else ''}".rstrip())
    typer.echo(f"\nfiles: {', '.join(sorted(p.name for p in skill.path.iterdir()))}")


@skills_app.command("add")
def skills_add(
    src: Path = typer.Argument(..., help="A skill folder to validate and install."),
    replace: bool = typer.Option(False, "--replace", help="Replace an installed skill of the same name."),
) -> None:
    """Validate a skill folder, install it into skills/ and re-index the knowledge base."""
    from omnimodel.skills import add_skill

    skill = add_skill(src, replace=replace)
    console.print(f"added skill {skill.name} v{skill.version} at {skill.path}")


@skills_app.command("remove")
def skills_remove(name: str = typer.Argument(..., help="Skill name.")) -> None:
    """Remove an installed skill and re-index the knowledge base."""
    from omnimodel.skills import remove_skill

    console.print(f"removed {remove_skill(name)}")


# ---------------------------------------------------------------- suite and eval
suite_app = typer.Typer(no_args_is_help=True, help="The built-in LIBERO-style manipulation suite.")
app.add_typer(suite_app, name="suite")


@suite_app.command("export")
def suite_export(
    out: Path = typer.Option(..., "--out", help="Directory for <suite>/<task>_demo.hdf5 files."),
    episodes_per_task: int = typer.Option(
        50, "--episodes-per-task", help="Successful expert demos per task."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the demonstration episodes."),
    suites: str = typer.Option("", "--suites", help="Comma-separated suites (default: all four)."),
) -> None:
    """Write scripted-expert demonstrations in LIBERO's HDF5 layout."""
    from omnimodel.suite.export import export_suites
    from omnimodel.suite.tasks import SUITE_NAMES

    names = [s for s in suites.split(",") if s] or list(SUITE_NAMES)
    check_writable(out, want_dir=True)
    paths = export_suites(out, episodes_per_task, seed, names)
    console.print(f"wrote {len(paths)} task files ({episodes_per_task} demos each) under {out}")


@suite_app.command("list")
def suite_list() -> None:
    """List suites, tasks and their instructions."""
    from omnimodel.suite.tasks import SUITE_NAMES, suite_tasks

    for suite in SUITE_NAMES:
        for t in suite_tasks(suite):
            typer.echo(f"{suite}\t{t.max_steps}\t{t.instruction}")


@app.command("eval")
def eval_cmd(
    targets: list[Path] = typer.Argument(
        None, help="Checkpoint dir(s) (config.json) or run dir(s) (report.json)."
    ),
    out: Path = typer.Option(Path("eval.json"), "--out", help="Where to write eval.json."),
    episodes_per_task: int = typer.Option(10, "--episodes-per-task", help="Closed-loop episodes per task."),
    seed: int = typer.Option(0, "--seed", help="Seed of the eval episodes."),
    suites: str = typer.Option("", "--suites", help="Comma-separated suites (default: all four)."),
    demos: Path | None = typer.Option(
        None, "--demos", help="Held-out LIBERO-style demos for offline action L1."
    ),
    offline_frames: int = typer.Option(256, "--offline-frames", help="Frames sampled for the offline L1."),
    tasks_from: str = typer.Option(
        "", "--tasks", help="Your own tasks: package.module:function -> list[EvalTask]."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="PNG of success vs bits per weight (several targets)."
    ),
    workers: int = typer.Option(
        1, "--workers", help="Closed-loop processes, one compute thread each (0: one per core)."
    ),
    server: str | None = typer.Option(
        None, "--server", help="A policy server to evaluate instead (ws://HOST:PORT, openpi protocol)."
    ),
) -> None:
    """Closed-loop success per suite (and offline action L1) of PyTorch checkpoints, native runs or a policy server."""
    import functools
    import os

    from omnimodel import eval as ev

    check_writable(out)
    if plot is not None:
        check_writable(plot, "--plot")
    names = [s for s in suites.split(",") if s] or None
    tasks = ev.make_tasks(tasks_from, names)
    tasks_factory = functools.partial(ev.make_tasks, tasks_from, names)
    workers = workers if workers > 0 else (os.cpu_count() or 1)
    results = []
    if bool(targets) == bool(server):
        raise ConfigError(
            "give checkpoint or run directories, or --server ws://HOST:PORT, not both and not neither"
        )
    if server:
        from omnimodel.serve_client import RemotePolicy, server_policy

        with RemotePolicy(server) as policy:
            res = ev.evaluate_target(None, policy, "server", None, tasks, episodes_per_task, seed, demos, offline_frames,
                                     workers=workers, tasks_factory=tasks_factory,
                                     policy_factory=functools.partial(server_policy, server))  # fmt: skip
        res["target"] = server
        res["server"] = {k: policy.metadata.get(k) for k in ("arch", "model", "action_chunk", "action_dim")}
        results.append(res)
    for target in [] if server else targets:
        policy, backend, bpw = ev.load_target(target)
        res = ev.evaluate_target(target, policy, backend, bpw, tasks, episodes_per_task, seed, demos, offline_frames,
                                 workers=workers, tasks_factory=tasks_factory)  # fmt: skip
        results.append(res)
    for res in results:
        table = "  ".join(f"{k} {100 * v:.1f}%" for k, v in res["success_per_suite"].items())
        console.print(f"{res['target']} [{res['backend']}]: {table}  mean {100 * res['success_mean']:.1f}%")
    ev.write_json(results[0] if len(results) == 1 else {"runs": results}, out)
    if len(results) > 1 or plot is not None:
        png = ev.plot_success_vs_bpw(results, plot or out.with_suffix(".png"))
        console.print(f"plot: {png}")
    console.print(f"wrote {out}")


# ---------------------------------------------------------------- quantize / inspect (helper B)
@app.command("quantize")
def quantize_cmd(
    src: str = typer.Argument(..., help="Checkpoint directory or preset name (preset: random init, seed 0)."),
    method: str = typer.Option("q8_0", "--method", help=f"One of {QUANT_FORMS}, or a plugin name."),
    out: Path = typer.Option(..., "--out", help="GGUF file to write."),
    device: str = typer.Option("cpu", "--device", help="Where the encoders run: cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    bpw: float | None = typer.Option(None, "--bpw", help="actquant: average bits per weight budget."),
    calib: Path | None = typer.Option(None, "--calib", help="actquant/imatrix: demonstrations directory."),
    calib_frames: int | None = typer.Option(None, "--calib-frames", help=CALIB_FRAMES_HELP),
    objective: str | None = typer.Option(
        None, "--objective", help="actquant scales: none|magnitude|action_fisher|amf."
    ),
    allocation: str | None = typer.Option(None, "--allocation", help="actquant types: hsic|uniform."),
    preset: str | None = typer.Option(None, "--preset", help="actquant: paper|authors."),
) -> None:
    """Write the whole model as GGUF, every quantizable weight in the method's type (the rest F32)."""
    from omnimodel.ggufio.convert import convert
    from omnimodel.quantspec import QuantSpec

    spec = QuantSpec.parse(method)
    if bpw is not None:
        spec = spec.with_budget(bpw)
    check_writable(out)
    if calib is not None or spec.needs_calibration:
        from actquant_plugin.quantize import quantize

        _show_progress("actquant_plugin")
        opts = {"objective": objective, "allocation": allocation, "preset": preset}
        frames = _frame_cap(calib_frames) if calib is not None else calib_frames
        res = quantize(src, str(spec), out, spec.budget, calib, frames, opts, device).convert
    else:
        res = convert(src, out, spec.quantizer(), device=device)
    info = {
        "path": str(res.path),
        "bytes": res.bytes,
        "bpw": res.bpw,
        "bpw_overall": res.bpw_overall,
        "fallbacks": {k: list(v) for k, v in res.fallbacks.items()},
    }
    if as_json:
        typer.echo(json.dumps(info))
    else:
        typer.echo(
            f"wrote {res.path} ({res.bytes / 1e6:.2f} MB, {res.bpw:.3f} bpw quantized, {res.bpw_overall:.3f} overall)"
        )
        for name, (want, got) in res.fallbacks.items():
            typer.echo(f"  {name}: {want} does not fit its rows, wrote {got}")


@app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(..., help="GGUF file."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable output."),
) -> None:
    """Print a GGUF's metadata, each tensor's type/shape/bytes, and bits per weight per component."""
    from omnimodel.ggufio.reader import format_summary, summarize

    summary = summarize(path)
    typer.echo(json.dumps(summary.to_json()) if as_json else format_summary(summary))


# ---------------------------------------------------------------- train (helper F)
@app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to write (released layout)."),
    steps: int = typer.Option(15000, "--steps", help="Optimiser steps."),
    batch: int = typer.Option(64, "--batch", help="Frames per step."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak AdamW learning rate."),
    device: str = typer.Option("auto", "--device", help="cpu|cuda|auto"),
    episodes_per_task: int = typer.Option(
        32, "--episodes-per-task", help="Expert episodes per task (half DART-perturbed)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of data, init and batches."),
    eval_episodes: int = typer.Option(
        0, "--eval-episodes", help="Closed-loop episodes per task after training (0: none)."
    ),
    demos: Path | None = typer.Option(
        None, "--demos", help="Train on LIBERO-style HDF5 demos instead of live expert data."
    ),
    workers: int = typer.Option(0, "--workers", help="Data-generation processes (0: one per core)."),
    ce_weight: float = typer.Option(0.2, "--ce-weight", help="Weight of the action-token cross-entropy."),
    time_budget: float = typer.Option(
        0.0, "--time-budget", help="Seconds of optimisation; >0 cuts --steps to fit."
    ),
    suites: str = typer.Option(
        "libero_spatial,libero_object,libero_goal,libero_10", "--suites", help="Comma list."
    ),
    init: Path | None = typer.Option(
        None, "--init", help="Start from this checkpoint's weights (same preset)."
    ),
    mixed_batches: bool = typer.Option(
        True, "--mixed-batches/--bucketed-batches", help="Mix tasks in a batch (padded prompts)."
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="The architecture whose recipe and loss train (default: the first registered one with a recipe)."
    ),
    preset: str | None = typer.Option(None, "--preset", help="Model preset (default: the arch's tiny one)."),
) -> None:
    """Train a tiny policy on the task suite by behaviour cloning, with the arch's own recipe and loss."""
    import dataclasses
    import shlex

    from omnimodel import train as train_mod

    logging.getLogger("omnimodel.train").setLevel(logging.INFO)
    from omnimodel import archs

    mod = train_mod.trainer(arch)
    arch_obj = archs.get(arch) if arch else None
    asked = dict(
        steps=steps, batch=batch, lr=lr, device=device, episodes_per_task=episodes_per_task, seed=seed,
        eval_episodes=eval_episodes, demos=str(demos) if demos else None, workers=workers, ce_weight=ce_weight,
        time_budget=time_budget, init=str(init) if init else None, mixed_batches=mixed_batches, suites=tuple(x.strip() for x in suites.split(",") if x.strip()),
    )  # fmt: skip
    if preset or (arch_obj and arch_obj.bundled_preset):
        asked["preset"] = preset or arch_obj.bundled_preset
    known = {f.name for f in dataclasses.fields(mod.TrainConfig)}
    given = {k: v for k, v in asked.items() if k in known}
    # an option the recipe does not have is an error only when the user changed it from its default
    import inspect

    defaults = {k: getattr(p.default, "default", p.default) for k, p in inspect.signature(train_cmd).parameters.items()}
    ignored = [f"--{k.replace('_', '-')}" for k in asked if k not in known and defaults.get(k) != asked[k]]
    if ignored:
        raise ConfigError(f"{', '.join(ignored)} do not apply to {arch}'s training recipe; drop them")
    cfg = mod.TrainConfig(**given)
    check_writable(out, want_dir=True)
    command = "omnimodel " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = mod.train(cfg, out, command=command)
    last = res.log[-1]
    parts = ", ".join(f"{k} {last[k]:.4f}" for k in ("l1", "ce") if k in last)
    typer.echo(f"trained {cfg.steps} steps on {res.frames} frames in {res.seconds:.0f} s: loss {last['loss']:.4f}"
               + (f" ({parts})" if parts else "") + f" -> {out}")  # fmt: skip
    if res.eval:
        for suite, v in res.eval["success_per_suite"].items():
            typer.echo(f"  {suite:<16} {100 * v:5.1f}%")
        typer.echo(f"  {'mean':<16} {100 * res.eval['success_mean']:5.1f}%")


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., help="latency | quant_speed | suite_speed | toolchain_build | actquant_table | actquant_7b"
    ),
) -> None:
    """Run a benchmark from benchmarks/ (ratios against a baseline measured in the same run)."""
    import runpy

    from omnimodel.errors import ConfigError
    from omnimodel.paths import REPO_ROOT

    script = REPO_ROOT / "benchmarks" / f"{name.replace('-', '_')}.py"
    if not script.is_file():
        known = sorted(p.stem for p in (REPO_ROOT / "benchmarks").glob("*.py"))
        raise ConfigError(f"no benchmark {name!r}: choose one of {', '.join(known)}")
    sys.argv = [str(script), *ctx.args]
    runpy.run_path(str(script), run_name="__main__")


# ---------------------------------------------------------------- serve, export (helper E)
@app.command("serve")
def serve_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run directory (model.gguf + build/)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port (0: any free port, printed on start)."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Checkpoint with tokenizer.json (default: port.json's)."
    ),
    threads: int = typer.Option(0, "--threads", help="CPU threads of the native policy (0: all)."),
    queue: int = typer.Option(
        8, "--queue", help="Requests that may wait for the policy; one more gets an error reply."
    ),
) -> None:
    """Serve a run's native policy over openpi's websocket protocol (Ctrl-C stops it)."""
    from omnimodel.serve import serve_run

    def ready(h: str, p: int) -> None:
        console.print(f"serving {run_dir} on ws://{h}:{p} (health: http://{h}:{p}/healthz)", highlight=False)

    served = serve_run(
        run_dir, host, port, checkpoint=checkpoint, n_threads=threads, queue_bound=queue, on_ready=ready
    )
    console.print(f"stopped after {served} requests", highlight=False)


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A built and validated run directory."),
    out: Path = typer.Option(..., "--out", help="Folder to write (must not exist or be empty)."),
) -> None:
    """Write what a robot needs without Python: library, GGML libs, header, CLI, model.gguf, a C example."""
    from omnimodel.export import export_run

    res = export_run(run_dir, check_writable(out, want_dir=True))
    typer.echo(f"exported {run_dir} to {res}")


def main() -> None:
    """Entry point: run the app, turning project errors into one line and a non-zero exit."""
    from typer.exceptions import TyperException

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(standalone_mode=False)  # usage errors come back here, to be printed on one line
    except (
        TyperException
    ) as exc:  # Typer's click: an unknown option or command, a missing argument, a bad value
        if type(exc).__name__ != "NoArgsIsHelpError":  # (that one has printed the help already)
            ctx = getattr(exc, "ctx", None)
            where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            message = exc.format_message().rstrip(".")
            console.print(f"[red]error:[/red] {message}{where}", soft_wrap=True, highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except OmniError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
