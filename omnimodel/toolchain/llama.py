"""libllama from the pinned llama.cpp source, built static (PIC) against a GGML build, cached per configuration.

Generated policies link it for one thing: llama.cpp's vocabulary code (the model's
`tokenizer.ggml.*` keys, loaded vocab-only). Only the `llama` target is built, with llama.cpp's
own CMake (common, tools, tests and examples off) against the cached GGML build, in the sandbox.
The prefix holds include/llama.h, include/stb_image.h (the CLI decodes images with it) and
lib/libllama.a; a generated CMake project gets it as -DLLAMA_DIR.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from omnimodel.errors import ToolchainError
from omnimodel.paths import cache_dir
from omnimodel.sandbox import Sandbox
from omnimodel.toolchain.build import BUILD_INFO, GGMLBuild, _lock, publish_install
from omnimodel.toolchain.source import llama_source_dir, llama_source_hash

log = logging.getLogger(__name__)

LIBRARY = "libllama.a"
HEADERS = ("include/llama.h", "include/llama-cpp.h", "vendor/stb/stb_image.h")
_BUILD_MEMORY_MB = 8192
_BUILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class LlamaBuild:
    """An installed libllama: include/ (llama.h, stb_image.h) and lib/libllama.a under `prefix`."""

    prefix: Path
    key: str

    @property
    def library(self) -> Path:
        """The static library."""
        return self.prefix / "lib" / LIBRARY


def cmake_flags() -> list[str]:
    """llama.cpp's CMake options for the vocabulary library alone (they enter the build key)."""
    return [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",  # linked into the policy's shared library
        "-DLLAMA_USE_SYSTEM_GGML=ON",
        "-DLLAMA_BUILD_COMMON=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_TOOLS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_ALL_WARNINGS=OFF",
    ]


def build_key(ggml: GGMLBuild) -> str:
    """sha256 over the llama.cpp source, the GGML build it links and the flags, first 16 hex digits."""
    blob = json.dumps(
        {"source": llama_source_hash(), "ggml": ggml.key, "flags": cmake_flags(), "headers": HEADERS},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def builds_root() -> Path:
    """Where installed libllama prefixes live in the cache."""
    return cache_dir() / "llama-build"


def ensure_llama_build(ggml: GGMLBuild, sandbox: Sandbox) -> LlamaBuild:
    """libllama for `ggml` built in `sandbox`: reused when its key is unchanged, else built now."""
    key = build_key(ggml)
    final = builds_root() / f"{ggml.backend}-{key}"
    if _complete(final, key):
        return LlamaBuild(final, key)
    builds_root().mkdir(parents=True, exist_ok=True)
    with _lock(builds_root() / f".lock-{ggml.backend}-{key}"):
        if not _complete(final, key):
            _build(final, key, ggml, sandbox)
    if not _complete(final, key):
        raise ToolchainError(f"libllama build {final} is incomplete after building; delete it and retry")
    return LlamaBuild(final, key)


def _complete(prefix: Path, key: str) -> bool:
    info = prefix / BUILD_INFO
    return (
        info.is_file()
        and json.loads(info.read_text()).get("key") == key
        and (prefix / "lib" / LIBRARY).is_file()
    )


def _build(final: Path, key: str, ggml: GGMLBuild, box: Sandbox) -> None:
    src = llama_source_dir()
    work = builds_root() / f".work-{ggml.backend}-{key}"
    build_dir = work / "build"
    work.mkdir(parents=True, exist_ok=True)
    jobs = str(os.cpu_count() or 2)
    steps = [
        (
            "configure",
            [
                "cmake",
                "-S",
                str(src),
                "-B",
                str(build_dir),
                "-G",
                "Ninja",
                f"-Dggml_DIR={ggml.cmake_dir}",
                *cmake_flags(),
            ],
        ),
        ("build", ["cmake", "--build", str(build_dir), "--target", "llama", "-j", jobs]),
    ]
    if not shutil.which("ninja") and box.name == "local":
        steps[0] = ("configure", [c for c in steps[0][1] if c not in ("-G", "Ninja")])
    timings: dict[str, float] = {}
    started = time.monotonic()
    log.info("building libllama (key %s) in the %s sandbox", key, box.name)
    for name, cmd in steps:
        res = box.run(
            cmd,
            work,
            timeout_s=_BUILD_TIMEOUT_S,
            memory_mb=_BUILD_MEMORY_MB,
            pids=2048,
            ro_mounts={src: str(src), ggml.prefix: str(ggml.prefix)},
        )
        timings[f"{name}_s"] = round(res.wall_s, 3)
        if not res.ok:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-25:])
            log.error("libllama %s step failed:\n%s", name, tail)
            why = f"killed by {res.killed_by}" if res.killed_by else f"exit {res.exit_code}"
            raise ToolchainError(
                f"libllama {name} failed in the {box.name} sandbox ({why}); see the log above"
            )
    built = next(iter(sorted(build_dir.rglob(LIBRARY))), None)
    if built is None:
        raise ToolchainError(f"libllama build in {build_dir} produced no {LIBRARY}")
    install = work / "install"
    if install.exists():
        shutil.rmtree(install)
    (install / "lib").mkdir(parents=True)
    (install / "include").mkdir()
    shutil.copyfile(built, install / "lib" / LIBRARY)
    for header in HEADERS:
        shutil.copyfile(src / header, install / "include" / Path(header).name)
    timings["total_s"] = round(time.monotonic() - started, 3)
    info = {
        "key": key,
        "ggml": str(ggml.prefix),
        "ggml_key": ggml.key,
        "flags": cmake_flags(),
        "source_dir": str(src),
        "source_hash": llama_source_hash(),
        "sandbox": box.name,
        "timings": timings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    publish_install(install, final, work, info)
    log.info("libllama %s installed in %s (%.0f s)", key, final, timings["total_s"])
