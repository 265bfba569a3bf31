"""Build and cache GGML libraries per configuration (backend, flags, compiler, sandbox)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from omnimodel.errors import ToolchainError
from omnimodel.paths import cache_dir
from omnimodel.sandbox import Sandbox, get_sandbox
from omnimodel.toolchain.source import ggml_source_dir, source_hash

log = logging.getLogger(__name__)

BACKENDS = ("cpu", "cuda")
BUILD_INFO = "build.json"
EXTRA_ARGS_ENV = "OMNIMODEL_GGML_CMAKE_ARGS"
CUDA_ARCH_ENV = "OMNIMODEL_CUDA_ARCH"
_BUILD_MEMORY_MB = 8192
_BUILD_PIDS = 2048
_BUILD_TIMEOUT_S = {"cpu": 3600.0, "cuda": 4 * 3600.0}
# GGML is configured as a subproject of this wrapper: standalone mode wants files (ggml.pc.in)
# that the sdist does not ship, and the wrapper leaves the source tree untouched.
_WRAPPER_CMAKE = """cmake_minimum_required(VERSION 3.14)
project(omnimodel_ggml_build C CXX)
set(GGML_SOURCE_DIR "" CACHE PATH "the ggml source root")
add_subdirectory(${GGML_SOURCE_DIR} ggml)
"""


@dataclass(frozen=True)
class GGMLBuild:
    """An installed GGML build: include/, lib/ (shared libs) and lib/cmake/ggml under `prefix`."""

    prefix: Path
    backend: str
    key: str
    info: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def include_dir(self) -> Path:
        """Headers (ggml.h, ggml-backend.h, ...)."""
        return self.prefix / "include"

    @property
    def lib_dir(self) -> Path:
        """Shared libraries (libggml.so, libggml-base.so, libggml-cpu.so, ...)."""
        return self.prefix / "lib"

    @property
    def cmake_dir(self) -> Path:
        """The ggml CMake package, for `find_package(ggml)` with -Dggml_DIR."""
        return self.prefix / "lib" / "cmake" / "ggml"


def builds_root() -> Path:
    """Where installed GGML prefixes live in the cache."""
    return cache_dir() / "ggml-build"


def nvcc_path() -> Path | None:
    """The CUDA compiler: $CUDACXX, else nvcc on PATH, else the usual install location."""
    found = os.environ.get("CUDACXX") or shutil.which("nvcc")
    if found and Path(found).is_file():
        return Path(found)
    default = Path("/usr/local/cuda/bin/nvcc")
    return default if default.is_file() else None


def cublas_path(nvcc: Path) -> Path | None:
    """libcublas of the toolkit that holds `nvcc` (GGML's CUDA backend links it), or None."""
    roots = [nvcc.resolve().parent.parent, Path("/usr/local/cuda")]
    for root in roots:
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
            hits = sorted((root / sub).glob("libcublas.so*"))
            if hits:
                return hits[0]
    return None


def detect_cuda_arch() -> str:
    """The CUDA architecture to build for: $OMNIMODEL_CUDA_ARCH, else the first GPU's compute capability."""
    if os.environ.get(CUDA_ARCH_ENV):
        return os.environ[CUDA_ARCH_ENV]
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True
        )
        caps = proc.stdout.split()
        if proc.returncode == 0 and caps:
            return caps[0].replace(".", "")
    raise ToolchainError(f"no NVIDIA GPU detected to pick a CUDA architecture; set {CUDA_ARCH_ENV}=90 (H100)")


def cmake_flags(backend: str) -> list[str]:
    """The CMake cache arguments that define a configuration (they enter the build key)."""
    if backend not in BACKENDS:
        raise ToolchainError(f"unknown GGML backend {backend!r}: use one of {', '.join(BACKENDS)}")
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DGGML_BACKEND_DL=OFF",  # backends linked directly: no dlopen at run time
        "-DGGML_NATIVE=ON",
        "-DGGML_BUILD_TESTS=OFF",
        "-DGGML_BUILD_EXAMPLES=OFF",
        "-DGGML_CCACHE=OFF",
        "-DGGML_ALL_WARNINGS=OFF",
        "-DGGML_OPENMP=ON",
        "-DCMAKE_INSTALL_LIBDIR=lib",
        "-DCMAKE_INSTALL_RPATH=$ORIGIN",  # the libs find each other wherever the prefix lands
    ]
    if backend == "cuda":
        nvcc = nvcc_path()
        if nvcc is None:
            raise ToolchainError(
                "CUDA build asked but nvcc is not found: install the CUDA toolkit or use --backend cpu"
            )
        if cublas_path(nvcc) is None:
            raise ToolchainError(
                f"the CUDA toolkit of {nvcc} has no libcublas (GGML's CUDA backend links it): "
                "install the toolkit's cuBLAS (e.g. apt-get install libcublas-dev-<ver>) or use --backend cpu"
            )
        flags += [
            "-DGGML_CUDA=ON",
            f"-DCMAKE_CUDA_ARCHITECTURES={detect_cuda_arch()}",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            "-DGGML_CUDA_NCCL=OFF",
        ]
    flags += os.environ.get(EXTRA_ARGS_ENV, "").split()
    return flags


def _toolchain_identity(sandbox: Sandbox, backend: str) -> str:
    ident = sandbox.identity()
    if backend == "cuda":
        nvcc = nvcc_path()
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout if nvcc else ""
        ident += "|nvcc:" + (out.strip().splitlines()[-1] if out.strip() else "none")
    return ident


def build_key(src_hash: str, backend: str, flags: list[str], toolchain: str) -> str:
    """sha256 over everything that shapes the binaries, first 16 hex digits."""
    blob = json.dumps(
        {
            "source": src_hash,
            "backend": backend,
            "flags": flags,
            "toolchain": toolchain,
            "wrapper": _WRAPPER_CMAKE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_ggml_build(backend: str = "cpu", sandbox: str | Sandbox = "auto") -> GGMLBuild:
    """The GGML build for `backend` in `sandbox`: reused when its key is unchanged, else built now."""
    if sandbox == "auto" and backend == "cuda":
        sandbox = "local"  # the sandbox image carries no CUDA toolkit
    box = get_sandbox(sandbox) if isinstance(sandbox, str) else sandbox
    if backend == "cuda" and box.name != "local":
        raise ToolchainError("CUDA builds need --sandbox local: the sandbox image has no CUDA toolkit")
    src = ggml_source_dir()
    flags = cmake_flags(backend)
    toolchain = _toolchain_identity(box, backend)
    key = build_key(source_hash(src), backend, flags, toolchain)
    final = builds_root() / f"{backend}-{key}"
    found = _load(final, backend, key)
    if found:
        log.info("GGML %s build %s reused (%s)", backend, key, final)
        return found
    builds_root().mkdir(parents=True, exist_ok=True)
    with _lock(builds_root() / f".lock-{backend}-{key}"):
        found = _load(final, backend, key)  # another process may have built it while we waited
        if found:
            return found
        _build(src, final, box, backend, key, flags, toolchain)
    built = _load(final, backend, key)
    if built is None:
        raise ToolchainError(f"GGML build {final} is incomplete after building; delete it and retry")
    return built


def list_builds() -> list[GGMLBuild]:
    """Every complete GGML build in the cache."""
    root = builds_root()
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        backend, _, key = path.name.partition("-")
        build = _load(path, backend, key)
        if build:
            out.append(build)
    return out


def _load(prefix: Path, backend: str, key: str) -> GGMLBuild | None:
    info_path = prefix / BUILD_INFO
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    if info.get("key") != key:
        return None
    return GGMLBuild(prefix=prefix, backend=backend, key=key, info=info)


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(
    src: Path, final: Path, box: Sandbox, backend: str, key: str, flags: list[str], toolchain: str
) -> None:
    """Configure, build and install into a work dir in the sandbox, then rename the prefix into place.

    The work dir (and its CMake build tree) survives an interrupted build, so the next call resumes.
    """
    work = builds_root() / f".work-{backend}-{key}"
    build_dir, install_dir = work / "build", work / "install"
    work.mkdir(parents=True, exist_ok=True)
    wrapper = work / "wrapper"
    wrapper.mkdir(exist_ok=True)
    (wrapper / "CMakeLists.txt").write_text(_WRAPPER_CMAKE)
    if install_dir.exists():
        shutil.rmtree(install_dir)
    jobs = str(os.cpu_count() or 2)
    steps = [
        (
            "configure",
            [
                "cmake",
                "-S",
                str(wrapper),
                "-B",
                str(build_dir),
                "-G",
                "Ninja",
                f"-DGGML_SOURCE_DIR={src}",
                *flags,
            ],
        ),
        ("build", ["cmake", "--build", str(build_dir), "-j", jobs]),
        ("install", ["cmake", "--install", str(build_dir), "--prefix", str(install_dir)]),
    ]
    if not shutil.which("ninja") and box.name == "local":
        steps[0] = ("configure", [c for c in steps[0][1] if c not in ("-G", "Ninja")])
    timings: dict[str, float] = {}
    started = time.monotonic()
    deadline = _BUILD_TIMEOUT_S[backend]
    log.info("building GGML %s (key %s) in the %s sandbox", backend, key, box.name)
    for name, cmd in steps:
        res = box.run(
            cmd,
            work,
            timeout_s=deadline,
            memory_mb=_BUILD_MEMORY_MB,
            pids=_BUILD_PIDS,
            ro_mounts={src: str(src)},
        )
        timings[f"{name}_s"] = round(res.wall_s, 3)
        if not res.ok:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-25:])
            log.error("GGML %s step failed:\n%s", name, tail)
            why = f"killed by {res.killed_by}" if res.killed_by else f"exit {res.exit_code}"
            raise ToolchainError(
                f"GGML {backend} {name} failed in the {box.name} sandbox ({why}); "
                f"see the log above, fix the toolchain, and rerun `omnimodel toolchain build`"
            )
    timings["total_s"] = round(time.monotonic() - started, 3)
    libs = sorted(p.name for p in (install_dir / "lib").glob("libggml*.so*"))
    info = {
        "key": key,
        "backend": backend,
        "flags": flags,
        "source_dir": str(src),
        "source_hash": source_hash(src),
        "toolchain": toolchain,
        "sandbox": box.name,
        "timings": timings,
        "libs": libs,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    publish_install(install_dir, final, work, info)
    log.info("GGML %s build %s installed in %s (%.0f s)", backend, key, final, timings["total_s"])


def publish_install(install: Path, final: Path, work: Path, info: dict) -> None:
    """Write build.json into a finished install, make it world-readable and move it to `final` in one rename."""
    (install / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    _make_readable(install)
    if final.exists():
        shutil.rmtree(final)
    os.replace(install, final)
    shutil.rmtree(work, ignore_errors=True)


def _make_readable(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
