"""The sandbox interface: run one command in a work dir under time, memory and process limits."""

from __future__ import annotations

import abc
import contextlib
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

KilledBy = Literal["timeout", "memory", "pids"] | None

# Bytes kept from each of stdout and stderr (the tail): a runaway print loop must not fill memory.
OUTPUT_LIMIT = 4 << 20


@dataclass
class RunResult:
    """What one sandboxed command did."""

    exit_code: int
    stdout: str
    stderr: str
    wall_s: float
    killed_by: KilledBy
    backend: str
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the command exited 0 and no limit killed it."""
        return self.exit_code == 0 and self.killed_by is None


class Sandbox(abc.ABC):
    """A place to run untrusted build and test commands."""

    name: str = "abstract"
    #: One line saying why this backend was chosen (filled by get_sandbox).
    reason: str = ""

    @abc.abstractmethod
    def run(
        self,
        cmd: list[str],
        workdir: Path,
        *,
        timeout_s: float,
        memory_mb: int,
        pids: int = 256,
        ro_mounts: dict[Path, str] | None = None,
        env: dict | None = None,
        cpus: float | None = None,
    ) -> RunResult:
        """Run `cmd` in `workdir` (read-write) with the limits; `ro_mounts` maps host paths to paths inside.

        `memory_mb <= 0` means no memory limit (for CUDA programs, whose runtime maps large private
        regions); `cpus` defaults to every core.
        """

    @abc.abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the toolchain inside changes (image id, or host compiler)."""


def tail_text(data: bytes | str) -> str:
    """Decode and keep the last OUTPUT_LIMIT bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if len(data) > OUTPUT_LIMIT:
        data = b"[...truncated...]\n" + data[-OUTPUT_LIMIT:]
    return data.decode("utf-8", "replace")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt while a sandboxed command runs, so cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_interrupts():
    """Hold SIGINT/SIGTERM until the block ends (e.g. until a created container is known), then raise."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame):
        pending.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        raise KeyboardInterrupt(f"signal {pending[0]}")
