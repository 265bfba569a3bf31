"""Write files and directories so that a half-written artifact never looks valid."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file path beside `final`; rename it over `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory beside `final`; move it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the sandbox user must read it
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_writable(path: str | os.PathLike, flag: str = "--out", want_dir: bool = False) -> Path:
    """`path` if a file (or, with `want_dir`, a folder) can be written there, checked before any work.

    Its parent is created and a probe folder made and removed in it, so a read-only or missing
    place is one ConfigError line up front, not a traceback after minutes of work.
    """
    from omnimodel.errors import ConfigError

    path = Path(path)
    if want_dir and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, not a folder; choose another {flag}")
    if not want_dir and path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent))
    except OSError as exc:
        above = next(p for p in path.parents if p.exists())
        why = f"{above} is a file" if not above.is_dir() else (exc.strerror or str(exc))
        raise ConfigError(f"{flag} {path}: cannot write there ({why}); choose another {flag}") from None
    return path
