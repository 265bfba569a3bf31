"""The `omnimodel` command line: port, quantize, eval, bench, inspect, doctor, skills, kb, zoo, suite."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console

from omnimodel.errors import OmniError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
zoo_app = typer.Typer(no_args_is_help=True, help="Model presets and checkpoints.")
app.add_typer(zoo_app, name="zoo")
console = Console(stderr=True)


# ---------------------------------------------------------------- zoo
@zoo_app.command("make")
def zoo_make(
    preset: str = typer.Argument(..., help="Preset name, e.g. openvla-oft-tiny."),
    out_dir: Path = typer.Argument(..., help="Directory to write the checkpoint into."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initialisation."),
) -> None:
    """Write a deterministic random-init checkpoint in the real OpenVLA-OFT layout."""
    from omnimodel.models import zoo

    path = zoo.make_checkpoint(preset, out_dir, seed=seed)
    console.print(f"wrote {preset} checkpoint to {path}")


@zoo_app.command("info")
def zoo_info(
    target: str = typer.Argument(..., help="Preset name or checkpoint directory."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable counts."),
) -> None:
    """Print the module tree summary and parameter counts per component."""
    from omnimodel.models import zoo

    info = zoo.info(target)
    if as_json:
        typer.echo(json.dumps({"total": info.total, "components": info.components}))
    else:
        typer.echo(zoo.format_info(info))


@zoo_app.command("path")
def zoo_path(name: str = typer.Argument(..., help="Name of a shipped checkpoint.")) -> None:
    """Print the directory of a checkpoint shipped inside the package."""
    from omnimodel.models import zoo

    typer.echo(str(zoo.shipped_path(name)))


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
def kb_build(run: Path | None = typer.Option(None, "--run", help="Also index this run's cpp/ sources.")) -> None:
    """Build (or refresh) the cached knowledge-base index."""
    from omnimodel.kb.index import build_index

    kb = build_index(run_dir=run)
    console.print(f"indexed {len(kb.symbols)} symbols from {', '.join(str(r) for r in kb.roots)}")


@kb_app.command("ggml-notes")
def kb_ggml_notes(
    source: Path | None = typer.Option(None, "--source", help="GGML source root (default: the pinned one)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default knowledge_base/ggml_api)."),
) -> None:
    """Regenerate the GGML API notes from the pinned ggml headers."""
    from omnimodel.kb.ggml_notes import write_ggml_notes

    for path in write_ggml_notes(source, out_dir):
        console.print(f"wrote {path}")


@skills_app.command("list")
def skills_list(as_json: bool = typer.Option(False, "--json", help="Print machine-readable entries.")) -> None:
    """List installed skills with version, provenance and what they apply to."""
    from omnimodel.skills import load_skills

    for skill in load_skills():  # invalid folders are reported as warnings
        applies = [m.to_dict() for m in skill.applies_to]
        if as_json:
            typer.echo(json.dumps({"name": skill.name, "version": skill.version, "provenance": skill.provenance,
                                   "applies_to": applies, "description": skill.description}, default=str))
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


def main() -> None:
    """Entry point: run the app, turning project errors into one line and a non-zero exit."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except OmniError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
