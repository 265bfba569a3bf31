"""Build (once) the LeRobot 0.6.1 oracle venv that runs PI0Policy / PI05Policy on the CPU under Python 3.11.

Usage: python3.11 tests/oracles/build_lerobot_venv.py   -> prints the venv's python on one line.

LeRobot 0.6.1 declares Python >=3.12 and torch <2.12, but the pi policies run on 3.11 with the CPU
torch 2.13.0 that lies on this machine's disk. So the venv gets an exact, pinned list installed with
--no-deps (nothing is resolved, so no multi-GB CUDA torch is pulled in), lerobot itself with
--ignore-requires-python, and a mechanical back-port of the PEP 695 syntax in the three lerobot modules
the pi import path reaches (see BACKPORTS). Standard library only: it runs before any venv exists.
The venv lives at ~/.cache/omnimodel/venvs/lerobot-0.6.1-<hash of the pins and back-ports>; a finished
one is reused (a stamp file marks it complete). The pip log goes to <venv>.log.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

LEROBOT = "lerobot==0.6.1"

# The closure of what `import lerobot.policies.pi05.modeling_pi05 / pi0.modeling_pi0` and the
# processor pipeline import (lerobot.policies/__init__ pulls in gymnasium, cv2, PIL, requests via
# other policies' configs), found by importing, with their own dependencies; versions inside
# lerobot[pi]'s ranges (transformers >=5.4,<5.6, numpy <2.3, packaging <26). torchvision is
# deliberately absent: PyPI's wheel is a CUDA build that cannot load beside the CPU torch; the
# runner stubs its names. torch==2.13.0 resolves to the CPU wheel on this machine's disk.
PINS = [
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "click==8.5.1",
    "cloudpickle==3.1.3",
    "draccus==0.11.6",
    "einops==0.8.2",
    "Farama-Notifications==0.0.6",
    "filelock==4.3.2",
    "fsspec==2026.9.0",
    "gymnasium==1.4.0",
    "h11==0.16.0",
    "hf-xet==1.8.0",
    "httpcore==1.0.9",
    "httpx==0.29.0",
    "huggingface_hub==1.33.0",
    "idna==3.21",
    "Jinja2==3.1.6",
    "markdown-it-py==4.3.0",
    "MarkupSafe==3.0.4",
    "mdurl==0.1.2",
    "mergedeep==1.3.4",
    "mpmath==1.3.0",
    "mypy_extensions==1.2.0",
    "networkx==3.6.1",
    "numpy==2.2.6",
    "opencv-python-headless==4.13.0.92",
    "packaging==25.0",
    "pillow==12.3.0",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "Pygments==2.21.0",
    "PyYAML==6.0.4",
    "regex==2026.12.2",
    "requests==2.34.2",
    "rich==15.0.0",
    "safetensors==0.8.0",
    "scipy==1.17.1",
    "shellingham==1.5.4",
    "sympy==1.14.0",
    "tokenizers==0.22.2",
    "toml==0.10.2",
    "torch==2.13.0",
    "tqdm==4.70.1",
    "transformers==5.5.4",
    "typer==0.29.2",
    "typing-inspect==0.9.0",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
    "urllib3==2.8.0",
]

# PEP 695 syntax (Python 3.12) -> the 3.11 spelling of the same typing construct. These lines only
# declare generic type parameters; they change no runtime value, let alone numerics.
BACKPORTS = {
    "lerobot/utils/io_utils.py": [
        (
            "def deserialize_json_into_object[T: JsonLike](fpath: Path, obj: T) -> T:",
            "from typing import TypeVar  # omnimodel oracle back-port (PEP 695 -> TypeVar), no numerics\n"
            'T = TypeVar("T", bound=JsonLike)\n\n\n'
            "def deserialize_json_into_object(fpath: Path, obj: T) -> T:",
        )
    ],
    "lerobot/motors/motors_bus.py": [
        (
            "type NameOrID = str | int\ntype Value = int | float\n",
            "# omnimodel oracle back-port (PEP 695 type alias -> plain alias), no numerics\n"
            "NameOrID = str | int\nValue = int | float\n",
        )
    ],
    "lerobot/processor/pipeline.py": [
        (
            "class DataProcessorPipeline[TInput, TOutput](HubMixin):",
            "class DataProcessorPipeline(HubMixin, Generic[TInput, TOutput]):"
            "  # omnimodel oracle back-port (PEP 695 -> Generic), no numerics",
        ),
        (
            "from typing import Any, TypedDict, TypeVar, cast\n",
            "from typing import Any, TypedDict, TypeVar, cast\nfrom typing import Generic  # omnimodel oracle back-port\n",
        ),
    ],
}

MARK = "omnimodel oracle back-port"

IMPORT_CHECK = (
    "from lerobot.policies.pi05.modeling_pi05 import PI05Policy; "
    "from lerobot.policies.pi0.modeling_pi0 import PI0Policy; "
    "from lerobot.processor.pipeline import DataProcessorPipeline"
)


class BuildError(RuntimeError):
    """The oracle venv could not be built; the message says which step and where the log is."""


def venv_dir() -> Path:
    """Where the venv for the current pins lives."""
    key = json.dumps([LEROBOT, PINS, BACKPORTS], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = Path(os.environ.get("OMNIMODEL_CACHE", Path.home() / ".cache" / "omnimodel"))
    return root / "venvs" / f"lerobot-0.6.1-{digest}"


def _run(cmd: list[str], log: Path, step: str) -> None:
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise BuildError(f"lerobot oracle venv: {step} failed (exit {rc}); see {log}")


def apply_backports(site: Path) -> list[str]:
    """Rewrite the PEP 695 lines of BACKPORTS in the installed lerobot; idempotent; returns files changed."""
    changed = []
    for rel, edits in BACKPORTS.items():
        path = site / rel
        text = path.read_text()
        if MARK in text:
            continue
        new = text
        for old, repl in edits:
            if old in new:
                new = new.replace(old, repl, 1)
            elif repl not in new:
                raise BuildError(f"lerobot oracle venv: back-port target not found in {path}: {old!r}")
        if new != text:
            path.write_text(new)
            changed.append(rel)
    return changed


def build(python: str | None = None) -> Path:
    """Create the venv if needed and return its python; raise BuildError with one actionable line."""
    venv = venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then reuse its venv
        return _build_locked(venv, python)


def _build_locked(venv: Path, python: str | None) -> Path:
    py = venv / "bin" / "python"
    stamp = venv / ".omnimodel-complete"
    if stamp.exists() and py.exists():
        return py
    python = python or shutil.which("python3.11") or sys.executable
    log = venv.parent / f"{venv.name}.log"
    log.write_text(f"building {venv} with {python}\n")
    if venv.exists():
        shutil.rmtree(venv)
    _run([python, "-m", "venv", str(venv)], log, "python -m venv")
    pip = [str(py), "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--no-deps"]
    _run([*pip, *PINS], log, "pip install of the pinned dependencies")
    _run([*pip, "--ignore-requires-python", LEROBOT], log, f"pip install {LEROBOT}")
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    apply_backports(site)
    here = Path(__file__).resolve().parent
    check = f"import sys; sys.path.insert(0, {str(here)!r}); import lerobot_pi; lerobot_pi.install_torchvision_stub(); {IMPORT_CHECK}"
    _run([str(py), "-c", check], log, "importing the pi policies")
    stamp.write_text("ok\n")
    return py


def main() -> int:
    """CLI: build and print the venv's python, or one line saying what failed."""
    try:
        print(build())
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
