"""`omnimodel doctor`: what the toolchain, sandbox and LLM setup have, and the command that fixes each gap."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from dataclasses import dataclass

from rich.table import Table

PYTHON_DEPS = ("torch", "numpy", "gguf", "docker", "typer", "rich", "langgraph", "safetensors", "jinja2")
LLM_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


@dataclass
class Check:
    """One row: what was checked, whether it is usable, what was found, and the fix when it is not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version_line(exe: str, args: tuple[str, ...] = ("--version",), last: bool = False) -> str:
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = out.splitlines()
    return (lines[-1] if last else lines[0]) if lines else ""


def check_python_deps() -> Check:
    """Every core Python dependency importable by metadata."""
    missing, found = [], []
    for dist in PYTHON_DEPS:
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        return Check("Python deps", False, "missing: " + ", ".join(missing), "pip install -e .")
    return Check("Python deps", True, f"{len(found)} core packages present")


def check_tool(name: str, exe: str, fix: str) -> Check:
    """A command-line tool on PATH, with its version."""
    path = shutil.which(exe)
    if not path:
        return Check(name, False, f"{exe} not found", fix)
    return Check(name, True, _version_line(path) or path)


def check_ggml_source() -> Check:
    """The GGML source: extracted already, or overridden by the environment."""
    from omnimodel.toolchain import source

    if os.environ.get(source.SOURCE_ENV):
        try:
            return Check("GGML source", True, f"{source.SOURCE_ENV}={source.ggml_source_dir()}")
        except Exception as exc:  # report, never crash the doctor
            return Check(
                "GGML source", False, str(exc), f"unset {source.SOURCE_ENV} or point it at a checkout"
            )
    pinned = source._pinned_dir()
    if (pinned / source._COMPLETE_MARK).is_file():
        return Check("GGML source", True, f"{source.SDIST_PACKAGE}=={source.SDIST_VERSION} at {pinned}")
    return Check(
        "GGML source",
        False,
        f"not extracted yet ({source.SDIST_PACKAGE}=={source.SDIST_VERSION})",
        "omnimodel toolchain build",
    )


def check_ggml_builds() -> Check:
    """The cached GGML builds per backend and sandbox."""
    from omnimodel.toolchain import list_builds

    builds = list_builds()
    if not builds:
        return Check("GGML builds", False, "none cached", "omnimodel toolchain build --backend cpu")
    parts = [f"{b.backend}/{b.info.get('sandbox', '?')} {b.key}" for b in builds]
    return Check("GGML builds", True, ", ".join(parts))


def check_llama_builds() -> Check:
    """The cached libllama builds (the policy's tokenizer); built on the first port when missing."""
    from omnimodel.toolchain.llama import builds_root

    root = builds_root()
    found = sorted(p.name for p in root.glob("*-*") if (p / "lib" / "libllama.a").is_file()) if root.is_dir() else []
    if not found:
        return Check("libllama builds", False, "none cached (the first port builds it, ~5 min on 2 cores)",
                     "omnimodel toolchain build", required=False)  # fmt: skip
    return Check("libllama builds", True, ", ".join(found))


def check_docker() -> tuple[Check, Check]:
    """The Docker engine (answers a ping) and the sandbox image for the current recipe."""
    from omnimodel.errors import SandboxError
    from omnimodel.sandbox.image import BUILD_FIX, image_tag

    tag = image_tag()
    try:
        from omnimodel.sandbox.docker_backend import docker_client

        client = docker_client(timeout=3)
    except SandboxError as exc:
        fix = "apt-get install -y docker.io && (dockerd > /var/log/dockerd.log 2>&1 &)  # or bash .ci/setup_system.sh"
        return (
            Check("Docker engine", False, f"not running: {exc}", fix, required=False),
            Check("Sandbox image", False, f"{tag}: engine not reachable", BUILD_FIX, required=False),
        )
    engine = Check("Docker engine", True, f"server {client.version().get('Version', '?')}")
    try:
        image = client.images.get(tag)
        return engine, Check("Sandbox image", True, f"{tag} ({image.short_id})")
    except Exception:
        return engine, Check("Sandbox image", False, f"{tag} missing", BUILD_FIX, required=False)


def check_cuda() -> Check:
    """nvcc and a GPU (optional: CPU-only machines are fine)."""
    from omnimodel.toolchain.build import cublas_path, nvcc_path

    nvcc = nvcc_path()
    if not nvcc:
        return Check(
            "CUDA / nvcc",
            False,
            "nvcc not found (CPU backend only)",
            "install the CUDA toolkit (only for --backend cuda)",
            required=False,
        )
    version = _version_line(str(nvcc), last=True)
    smi = shutil.which("nvidia-smi")
    gpu = _version_line(smi, ("--query-gpu=name,compute_cap", "--format=csv,noheader")) if smi else ""
    if cublas_path(nvcc) is None:
        return Check(
            "CUDA / nvcc",
            False,
            f"{version}; no libcublas beside it (GPU: {gpu or 'none visible'})",
            "install the toolkit's cuBLAS (only for --backend cuda)",
            required=False,
        )
    return Check("CUDA / nvcc", True, f"{version}; GPU: {gpu or 'none visible'}", required=False)


def check_llm_keys() -> list[Check]:
    """Whether each provider key is set; never its value."""
    return [
        Check(
            key,
            bool(os.environ.get(key)),
            "present" if os.environ.get(key) else "absent",
            f"export {key}=...  (only for --llm with that provider)",
            required=False,
        )
        for key in LLM_KEYS
    ]


def run_checks() -> list[Check]:
    """All checks, in table order."""
    checks = [
        check_python_deps(),
        check_tool("C/C++ compiler", "c++", "apt-get install -y g++"),
        check_tool("cmake", "cmake", "apt-get install -y cmake"),
        check_tool("ninja", "ninja", "apt-get install -y ninja-build"),
        check_ggml_source(),
        check_ggml_builds(),
        check_llama_builds(),
        *check_docker(),
        check_cuda(),
        *check_llm_keys(),
    ]
    return checks


def render(checks: list[Check]) -> Table:
    """One rich table: status, component, what was found, and the fix for each gap."""
    table = Table(title="omnimodel doctor", show_lines=False)
    for col in ("", "component", "found", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        mark = (
            "[green]ok[/green]"
            if c.ok
            else ("[red]missing[/red]" if c.required else "[yellow]missing[/yellow]")
        )
        table.add_row(mark, c.name, c.detail, "" if c.ok else c.fix)
    return table
