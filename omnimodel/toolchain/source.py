"""The pinned GGML source: the ggml/ tree vendored in the llama-cpp-python sdist, or a user's checkout."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from omnimodel.atomic import atomic_dir
from omnimodel.errors import ToolchainError
from omnimodel.paths import cache_dir

log = logging.getLogger(__name__)

SDIST_PACKAGE = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_FILENAME = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
# Inside the sdist, the ggml tree that CMake needs (CMakeLists.txt, cmake/, include/, src/).
_GGML_PREFIX = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/ggml/"
# The llama.cpp tree libllama needs (llama.cpp's CMake with LLAMA_USE_SYSTEM_GGML, no tools).
_LLAMA_PREFIX = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
_LLAMA_PARTS = (
    "CMakeLists.txt",
    "LICENSE",
    "cmake/",
    "src/",
    "include/",
    "vendor/",
    "licenses/",
    "ggml/cmake/",
)
SOURCE_ENV = "OMNIMODEL_GGML_SOURCE"
_COMPLETE_MARK = ".omnimodel-source.json"


def _pinned_dir() -> Path:
    return cache_dir() / "ggml-src" / f"{SDIST_VERSION}-{SDIST_SHA256[:8]}"


def _override_root(raw: str) -> Path:
    """Accept either a ggml checkout or a llama.cpp checkout (which holds ggml/)."""
    root = Path(raw).expanduser().resolve()
    for candidate in (root, root / "ggml"):
        if (candidate / "include" / "ggml.h").is_file() and (candidate / "CMakeLists.txt").is_file():
            return candidate
    raise ToolchainError(
        f"{SOURCE_ENV}={raw} holds no ggml source (no include/ggml.h): point it at a ggml or llama.cpp "
        f"checkout, or unset it to use the pinned {SDIST_PACKAGE}=={SDIST_VERSION}"
    )


def ggml_source_dir() -> Path:
    """The ggml source root (it holds include/ggml.h): $OMNIMODEL_GGML_SOURCE, else the pinned sdist's."""
    raw = os.environ.get(SOURCE_ENV)
    if raw:
        return _override_root(raw)
    final = _pinned_dir()
    if (final / _COMPLETE_MARK).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".lock-{final.name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one extractor; the others wait and reuse its result
        if not (final / _COMPLETE_MARK).is_file():
            _fetch_and_extract(final)
    return final


def _llama_pinned_dir() -> Path:
    return cache_dir() / "llama-src" / f"{SDIST_VERSION}-{SDIST_SHA256[:8]}"


def llama_source_dir() -> Path:
    """The pinned llama.cpp source (CMake, src/, include/, vendor/; no ggml/): extracted from the sdist once."""
    final = _llama_pinned_dir()
    if (final / _COMPLETE_MARK).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".lock-{final.name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / _COMPLETE_MARK).is_file():
            with tempfile.TemporaryDirectory(prefix="omnimodel-sdist-") as tmp:
                sdist = _download_sdist(Path(tmp))
                with atomic_dir(final) as staging:
                    _extract(sdist, staging, _LLAMA_PREFIX, _LLAMA_PARTS)
                    if not (staging / "include" / "llama.h").is_file():
                        raise ToolchainError(
                            f"{SDIST_FILENAME} holds no {_LLAMA_PREFIX}include/llama.h; the pin is wrong"
                        )
                    (staging / _COMPLETE_MARK).write_text(
                        json.dumps(
                            {"package": SDIST_PACKAGE, "version": SDIST_VERSION, "sha256": SDIST_SHA256}
                        )
                        + "\n"
                    )
                    _make_world_readable(staging)
            log.info("llama.cpp source extracted to %s", final)
    return final


def llama_source_hash() -> str:
    """The pinned sdist's sha256 (libllama is always built from the pin)."""
    return f"sdist-{SDIST_SHA256}"


def _fetch_and_extract(final: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="omnimodel-sdist-") as tmp:
        sdist = _download_sdist(Path(tmp))
        with atomic_dir(final) as staging:
            _extract_ggml(sdist, staging)
            (staging / _COMPLETE_MARK).write_text(
                f'{{"package": "{SDIST_PACKAGE}", "version": "{SDIST_VERSION}", "sha256": "{SDIST_SHA256}"}}\n'
            )
            _make_world_readable(staging)
    log.info("GGML source extracted to %s", final)


def source_hash(src: Path | None = None) -> str:
    """A content hash of the GGML source: the sdist sha256 when pinned, else a hash of every file."""
    src = src or ggml_source_dir()
    if (src / _COMPLETE_MARK).is_file() and src.resolve() == _pinned_dir().resolve():
        return f"sdist-{SDIST_SHA256}"
    digest = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file() and ".git" not in p.parts):
        digest.update(str(path.relative_to(src)).encode())
        digest.update(path.read_bytes())
    return f"tree-{digest.hexdigest()}"


def _download_sdist(dest: Path) -> Path:
    """Fetch the pinned sdist with pip (PyPI only) and check its sha256."""
    cached = cache_dir() / "downloads" / SDIST_FILENAME
    if cached.is_file() and _sha256(cached) == SDIST_SHA256:
        return cached
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        f"{SDIST_PACKAGE}=={SDIST_VERSION}",
        "-d",
        str(dest),
    ]
    log.info("downloading %s==%s sdist from PyPI", SDIST_PACKAGE, SDIST_VERSION)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    got = dest / SDIST_FILENAME
    if proc.returncode != 0 or not got.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ToolchainError(
            f"could not download {SDIST_PACKAGE}=={SDIST_VERSION} from PyPI ({tail[0]}); "
            f"check the network or set {SOURCE_ENV}=DIR to a ggml checkout"
        )
    actual = _sha256(got)
    if actual != SDIST_SHA256:
        raise ToolchainError(
            f"{SDIST_FILENAME} has sha256 {actual}, expected {SDIST_SHA256}: refusing it; "
            f"set {SOURCE_ENV}=DIR to use your own checkout"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    os.replace(got, cached)
    return cached


def _extract_ggml(sdist: Path, dest: Path) -> None:
    """Extract only the vendored ggml/ tree, stripping its prefix, refusing unsafe members."""
    _extract(sdist, dest, _GGML_PREFIX)
    if not (dest / "include" / "ggml.h").is_file():
        raise ToolchainError(f"{SDIST_FILENAME} holds no {_GGML_PREFIX}include/ggml.h; the pin is wrong")


def _extract(sdist: Path, dest: Path, prefix: str, parts: tuple[str, ...] | None = None) -> None:
    """Extract the members under `prefix` (only those starting with one of `parts`), stripping it; no unsafe paths."""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
                continue
            rel = member.name[len(prefix) :]
            if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                continue
            if parts is not None and not any(rel == p.rstrip("/") or rel.startswith(p) for p in parts):
                continue
            target = dest / rel
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as fin, open(target, "wb") as fout:  # type: ignore[union-attr]
                fout.write(fin.read())


def _make_world_readable(root: Path) -> None:
    """The sandbox user (not root) must read the source through a read-only mount."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fin:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
