"""Local sandbox: a subprocess in its own session with rlimits and a watchdog; it isolates less than Docker.

What it enforces: a wall-clock limit (the whole process group and session are killed), a memory
limit (RLIMIT_DATA, which since Linux 4.7 covers private anonymous mappings, plus a resident-set
watchdog), a process limit (RLIMIT_NPROC for non-root users; root ignores that rlimit, so a watchdog
counts the session's processes and kills it past the limit), no network when running as root
(`unshare --net`), and no LLM keys or tokens in the environment. What it does not: the file system
is the host's (writes outside the work dir are possible), and as a non-root user the network is the
host's. Use the Docker backend for untrusted code whenever an engine is available.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from omnimodel.sandbox.base import (
    KilledBy,
    RunResult,
    Sandbox,
    deferred_interrupts,
    sigterm_as_interrupt,
    tail_text,
)

log = logging.getLogger(__name__)

_SECRET_ENV = re.compile(r"(_API_KEY|_TOKEN|_SECRET|PASSWORD)$", re.IGNORECASE)
_OOM_MARKERS = (
    "std::bad_alloc",
    "Cannot allocate memory",
    "MemoryError",
    "out of memory",
    "failed to allocate",
)
_POLL_S = 0.02
_SCAN_EVERY_S = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE")


@lru_cache(maxsize=1)
def _can_unshare_net() -> bool:
    """Root can drop the network with a fresh network namespace, where the kernel allows it."""
    exe = shutil.which("unshare")
    if os.geteuid() != 0 or not exe:
        return False
    try:
        return subprocess.run([exe, "--net", "--", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _session_procs(sid: int) -> list[tuple[int, int]]:
    """(pid, rss bytes) of every live process in session `sid`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fin:
                stat = fin.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 21 and int(fields[3]) == sid and fields[0] != b"Z":
            found.append((int(entry.name), int(fields[21]) * _PAGE))
    return found


def _kill_session(sid: int) -> None:
    """SIGKILL the process group and every straggler of the session."""
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid, _rss in _session_procs(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class LocalSandbox(Sandbox):
    """Runs commands on the host with rlimits, a process-group timeout and a watchdog."""

    name = "local"

    _warned = False

    def __init__(self) -> None:
        if not LocalSandbox._warned:  # once per process: the choice does not change
            LocalSandbox._warned = True
            log.warning(
                "local sandbox: isolates less than Docker (host file system; network %s)",
                "cut by a network namespace" if _can_unshare_net() else "open",
            )

    def identity(self) -> str:
        """The host compiler and cmake versions."""
        parts = []
        for tool in ("c++", "cmake"):
            exe = shutil.which(tool)
            out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout if exe else ""
            parts.append(out.splitlines()[0] if out else f"{tool}: none")
        return "local:" + "|".join(parts)

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
        """Run `cmd` in `workdir`; ro_mounts must map each host path to itself (there is no remapping)."""
        workdir = Path(workdir).resolve()
        for host, inside in (ro_mounts or {}).items():
            if Path(host).resolve() != Path(inside).resolve():
                raise ValueError(f"local sandbox cannot remap {host} to {inside}: use the same path")
        full_env = {k: v for k, v in os.environ.items() if not _SECRET_ENV.search(k)}
        full_env.update({str(k): str(v) for k, v in (env or {}).items()})
        argv = list(cmd)
        if _can_unshare_net():
            argv = [shutil.which("unshare") or "unshare", "--net", "--", *argv]
        is_root = os.geteuid() == 0
        mem_bytes = memory_mb * (1 << 20) if memory_mb > 0 else None

        def limits() -> None:
            if mem_bytes:
                resource.setrlimit(resource.RLIMIT_DATA, (mem_bytes, mem_bytes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if not is_root:
                # RLIMIT_NPROC counts every process of the user, so allow the ones already running.
                mine = sum(1 for e in os.scandir("/proc") if e.name.isdigit() and _owned(e.path))
                resource.setrlimit(resource.RLIMIT_NPROC, (mine + pids, mine + pids))

        with tempfile.TemporaryDirectory(prefix="omnimodel-local-") as tmp:
            out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
            killed: KilledBy = None
            start = time.monotonic()
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = None
                try:
                    with sigterm_as_interrupt():
                        try:
                            with deferred_interrupts():  # never lose track of a started child
                                proc = subprocess.Popen(
                                    argv,
                                    cwd=workdir,
                                    env=full_env,
                                    stdin=subprocess.DEVNULL,
                                    stdout=out,
                                    stderr=err,
                                    start_new_session=True,
                                    preexec_fn=limits,
                                )
                        except OSError as exc:
                            return RunResult(127, "", f"cannot start {cmd[0]}: {exc}", 0.0, None, self.name)
                        killed = self._watch(proc, start, timeout_s, mem_bytes, pids)
                except BaseException:
                    if proc is not None:
                        _kill_session(proc.pid)
                        proc.wait()
                    raise
            wall = time.monotonic() - start
            code = proc.returncode
            exit_code = 128 - code if code < 0 else code
            stdout, stderr = tail_text(out_path.read_bytes()), tail_text(err_path.read_bytes())
        if killed is None and exit_code != 0 and mem_bytes and any(m in stderr for m in _OOM_MARKERS):
            killed = "memory"
        return RunResult(exit_code, stdout, stderr, wall, killed, self.name)

    def _watch(
        self, proc: subprocess.Popen, start: float, timeout_s: float, mem_bytes: int | None, pids: int
    ) -> KilledBy:
        """Wait for the process; kill its whole session on timeout, too many processes or too much RSS."""
        next_scan = start
        while proc.poll() is None:
            now = time.monotonic()
            if now - start >= timeout_s:
                _kill_session(proc.pid)
                proc.wait()
                return "timeout"
            if now >= next_scan:
                next_scan = now + _SCAN_EVERY_S
                procs = _session_procs(proc.pid)
                if len(procs) > pids:
                    _kill_session(proc.pid)
                    proc.wait()
                    return "pids"
                if mem_bytes and sum(rss for _pid, rss in procs) > mem_bytes:
                    _kill_session(proc.pid)
                    proc.wait()
                    return "memory"
            time.sleep(_POLL_S)
        # Reap stragglers that outlived the leader (daemonised children stay in the session).
        _kill_session(proc.pid)
        return None


def _owned(proc_path: str) -> bool:
    try:
        return os.stat(proc_path).st_uid == os.getuid()
    except OSError:
        return False
