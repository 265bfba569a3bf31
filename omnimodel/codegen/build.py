"""Configure and build a rendered cpp/ project against a GGML build, on this machine."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omnimodel.errors import ToolchainError

log = logging.getLogger(__name__)

GGML_DIR_ENV = "OMNIMODEL_GGML_DIR"


def find_ggml_prefix(backend: str = "cpu") -> Path | None:
    """A GGML install prefix: $OMNIMODEL_GGML_DIR, else a cached toolchain build; None when neither exists."""
    env = os.environ.get(GGML_DIR_ENV)
    if env:
        return Path(env)
    from omnimodel.toolchain.build import list_builds

    for build in list_builds():
        if build.backend == backend:
            return build.prefix
    return None


def build_project(
    cpp_dir: Path, build_dir: Path, ggml_prefix: Path | None = None, jobs: int = 2, sandbox: str = "auto", backend: str = "cpu"
) -> Path:
    """Configure and build a generated `cpp_dir` into `build_dir` inside the sandbox; returns `build_dir`.

    Generated code is untrusted: it is compiled only in the sandbox (Docker when the engine answers,
    else the local backend), against the GGML build made for that sandbox. `ggml_prefix` is accepted
    for callers that pass one and must then exist.
    """
    from omnimodel.sandbox import get_sandbox
    from omnimodel.sandbox.cmake_project import compile_and_run_cmake_project
    from omnimodel.toolchain import ensure_ggml_build

    if ggml_prefix is not None and not (Path(ggml_prefix) / "include" / "ggml.h").is_file():
        raise ToolchainError(f"{ggml_prefix}: no include/ggml.h; build GGML first (omnimodel toolchain build)")
    box = get_sandbox(sandbox)
    ggml = ensure_ggml_build(backend, box)
    res = compile_and_run_cmake_project(Path(cpp_dir), Path(build_dir), box, ggml, configure_args=[f"-DGGML_DIR={ggml.prefix}"])
    failed = res.failed_step()
    if failed:
        step, out = failed
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-20:])
        raise ToolchainError(f"{step} failed for {cpp_dir} in the {box.name} sandbox:\n{tail}")
    log.info("built %s in the %s sandbox", build_dir, box.name)
    return Path(build_dir)
