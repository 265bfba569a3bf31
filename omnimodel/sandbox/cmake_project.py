"""Configure, build and run a CMake project against a GGML build, every step inside a sandbox."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omnimodel.sandbox.base import RunResult, Sandbox

if TYPE_CHECKING:
    from omnimodel.toolchain.build import GGMLBuild


@dataclass
class CMakeRun:
    """The sandbox results of each step; `run` is None when the build failed or nothing was run."""

    configure: RunResult
    build: RunResult | None = None
    run: RunResult | None = None

    @property
    def ok(self) -> bool:
        """True when every step that ran succeeded and the program (if asked for) ran."""
        steps = [self.configure, self.build, self.run]
        return all(s is None or s.ok for s in steps) and self.build is not None

    def failed_step(self) -> tuple[str, RunResult] | None:
        """The first failing step's name and result, or None."""
        for name in ("configure", "build", "run"):
            res = getattr(self, name)
            if res is not None and not res.ok:
                return name, res
        return None


def compile_and_run_cmake_project(
    src_dir: Path,
    build_dir: Path,
    sandbox: Sandbox,
    ggml_build: GGMLBuild,
    *,
    run: list[str] | None = None,
    configure_args: list[str] | None = None,
    ro_mounts: dict[Path, str] | None = None,
    build_timeout_s: float = 900.0,
    run_timeout_s: float = 120.0,
    memory_mb: int = 4096,
    run_memory_mb: int | None = None,
    pids: int = 512,
    env: dict | None = None,
) -> CMakeRun:
    """Build `src_dir` (mounted read-only) in `build_dir` with find_package(ggml) wired, then run `run`.

    A project whose CMakeLists.txt takes LLAMA_DIR gets the cached libllama build for `ggml_build`
    (built now if missing) mounted and passed.

    `run[0]` is a path relative to `build_dir` (or absolute); the program runs with `build_dir` as
    its working directory. The GGML prefix and `ro_mounts` (inputs such as a GGUF file) are mounted
    read-only at their host paths; they must be readable by the sandbox uid (src_dir is made so).
    """
    src_dir, build_dir = Path(src_dir).resolve(), Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    _open_for_reading(src_dir)
    mounts = {src_dir: str(src_dir), ggml_build.prefix: str(ggml_build.prefix)}
    configure_args = list(configure_args or [])
    if _wants_llama(src_dir) and not any(a.startswith("-DLLAMA_DIR=") for a in configure_args):
        from omnimodel.toolchain.llama import ensure_llama_build

        llama = ensure_llama_build(ggml_build, sandbox)
        mounts[llama.prefix] = str(llama.prefix)
        configure_args.append(f"-DLLAMA_DIR={llama.prefix}")
    mounts.update(ro_mounts or {})
    run_env = {"LD_LIBRARY_PATH": str(ggml_build.lib_dir)}
    run_env.update(env or {})
    jobs = str(os.cpu_count() or 2)
    configure_cmd = [
        "cmake",
        "-S",
        str(src_dir),
        "-B",
        str(build_dir),
        "-G",
        "Ninja",
        "-DCMAKE_BUILD_TYPE=Release",
        f"-Dggml_DIR={ggml_build.cmake_dir}",
        f"-DCMAKE_PREFIX_PATH={ggml_build.prefix}",
        *configure_args,
    ]
    common = {"memory_mb": memory_mb, "pids": pids, "ro_mounts": mounts, "env": run_env}
    result = CMakeRun(configure=sandbox.run(configure_cmd, build_dir, timeout_s=build_timeout_s, **common))
    if not result.configure.ok:
        return result
    result.build = sandbox.run(
        ["cmake", "--build", str(build_dir), "-j", jobs], build_dir, timeout_s=build_timeout_s, **common
    )
    if not result.build.ok or not run:
        return result
    exe = Path(run[0]) if Path(run[0]).is_absolute() else build_dir / run[0]
    common["memory_mb"] = memory_mb if run_memory_mb is None else run_memory_mb
    result.run = sandbox.run([str(exe), *run[1:]], build_dir, timeout_s=run_timeout_s, **common)
    return result


def _wants_llama(src_dir: Path) -> bool:
    """Whether the project links libllama (its CMakeLists.txt takes LLAMA_DIR, as the generated policy does)."""
    cml = src_dir / "CMakeLists.txt"
    return cml.is_file() and "LLAMA_DIR" in cml.read_text()


def _open_for_reading(root: Path) -> None:
    """Let the sandbox user (not the host user) read the generated sources it gets mounted read-only."""
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o555)
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
