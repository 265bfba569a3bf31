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
