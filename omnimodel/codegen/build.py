"""Configure and build a rendered cpp/ project against a GGML build, on this machine."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
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


def build_project(cpp_dir: Path, build_dir: Path, ggml_prefix: Path, jobs: int = 2) -> Path:
    """cmake-configure and build `cpp_dir` into `build_dir`; returns the folder holding the library."""
    if not (Path(ggml_prefix) / "include" / "ggml.h").is_file():
        raise ToolchainError(f"{ggml_prefix}: no include/ggml.h; build GGML first (omnimodel doctor)")
    if shutil.which("cmake") is None:
        raise ToolchainError("cmake not found; install cmake (apt-get install cmake)")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    steps = [
        ["cmake", "-S", str(cpp_dir), "-B", str(build_dir), *gen, f"-DGGML_DIR={ggml_prefix}"],
        ["cmake", "--build", str(build_dir), "-j", str(jobs)],
    ]
    for cmd in steps:
        proc = subprocess.run(["nice", *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise ToolchainError(f"{' '.join(cmd[:2])} failed for {cpp_dir}:\n{tail}")
    log.info("built %s", build_dir)
    return Path(build_dir)
