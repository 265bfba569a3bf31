"""Docker sandbox: a throw-away container with no network, no capabilities and hard limits.

Layout inside the container: the work dir is bind-mounted read-write at the same absolute path
as on the host (so paths recorded in CMake caches stay valid on both sides); each read-only
mount (the GGML prefix, the GGML source) at the path its caller names, usually its host path.
The root file system is read-only, /tmp is a small tmpfs, the user is the host user's uid (1000
when the host user is root, in which case the work dir is handed to uid 1000 first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from omnimodel.errors import SandboxError
from omnimodel.sandbox.base import (
    KilledBy,
    RunResult,
    Sandbox,
    deferred_interrupts,
    sigterm_as_interrupt,
    tail_text,
)
from omnimodel.sandbox.image import BUILD_FIX, LABEL, build_image, image_tag

log = logging.getLogger(__name__)

ROOT_FALLBACK_UID = 1000
TMPFS_SIZE = "512m"
_DOCKER_FIX = "start the engine: dockerd & (or bash .ci/setup_system.sh), or use --sandbox local"


def docker_client(timeout: float = 5.0):
    """A docker SDK client whose engine answered a ping, else SandboxError naming the fix."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as exc:  # the SDK raises several unrelated types when no engine answers
        raise SandboxError(f"Docker engine not reachable ({type(exc).__name__}); {_DOCKER_FIX}") from exc


def sandbox_uid() -> int:
    """The uid the container runs as: the host user's, or 1000 when the host user is root."""
    uid = os.getuid()
    return uid if uid != 0 else ROOT_FALLBACK_UID


def _hand_over(workdir: Path, uid: int) -> None:
    """Give the work dir tree to the sandbox uid so a non-root container can write into it."""
    if os.getuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(workdir):
        os.lchown(dirpath, uid, uid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def _pids_limit_hit(container_id: str) -> bool:
    """True when the container's pids cgroup refused a fork (cgroup v1 or v2 layouts)."""
    candidates = (
        f"/sys/fs/cgroup/pids/docker/{container_id}/pids.events",
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/pids.events",
        f"/sys/fs/cgroup/docker/{container_id}/pids.events",
        f"/sys/fs/cgroup/pids/system.slice/docker-{container_id}.scope/pids.events",
    )
    for path in candidates:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max" and int(value) > 0:
                    return True
    return False


class DockerSandbox(Sandbox):
    """Runs each command in a fresh locked-down container of the omnimodel-sandbox image."""

    name = "docker"

    def __init__(self, client=None, image: str | None = None, build_if_missing: bool = True) -> None:
        self.client = client or docker_client()
        self.image = image or image_tag()
        if not self._image_present():
            if not build_if_missing:
                raise SandboxError(f"sandbox image {self.image} is missing; run {BUILD_FIX}")
            build_image()
            if not self._image_present():
                raise SandboxError(f"sandbox image {self.image} still missing after build; run {BUILD_FIX}")

    def _image_present(self) -> bool:
        import docker

        try:
            self.client.images.get(self.image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def identity(self) -> str:
        """The image id (content hash) of the sandbox image."""
        return "docker:" + self.client.images.get(self.image).id

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
        """Run `cmd` in a fresh container; the container is removed whatever happens."""
        workdir = Path(workdir).resolve()
        uid = sandbox_uid()
        _hand_over(workdir, uid)
        volumes = {str(workdir): {"bind": str(workdir), "mode": "rw"}}
        for host, inside in (ro_mounts or {}).items():
            volumes[str(Path(host).resolve())] = {"bind": str(inside), "mode": "ro"}
        environment = {"HOME": "/tmp", "TMPDIR": "/tmp"}
        environment.update({str(k): str(v) for k, v in (env or {}).items()})
        mem = f"{memory_mb}m" if memory_mb > 0 else None  # None: no memory limit
        container = None
        with sigterm_as_interrupt():
            try:
                with deferred_interrupts():  # a Ctrl-C mid-create would leave a container we cannot name
                    container = self.client.containers.create(
                        self.image,
                        command=list(cmd),
                        working_dir=str(workdir),
                        user=f"{uid}:{uid}",
                        environment=environment,
                        volumes=volumes,
                        labels={LABEL: "1", f"{LABEL}.pid": str(os.getpid())},
                        network_mode="none",
                        cap_drop=["ALL"],
                        security_opt=["no-new-privileges"],
                        read_only=True,
                        tmpfs={"/tmp": f"rw,nosuid,nodev,size={TMPFS_SIZE},mode=1777"},
                        pids_limit=pids,
                        mem_limit=mem,
                        memswap_limit=mem,
                        nano_cpus=int((cpus or os.cpu_count() or 1) * 1e9),
                        ulimits=[_ulimit("core", 0)],
                        stdin_open=False,
                        tty=False,
                        detach=True,
                        log_config={"type": "json-file", "config": {"max-size": "8m"}},
                    )
                result = self._run_container(container, timeout_s)
            except BaseException:
                if container is not None:  # interrupted: the pooled connection may be mid-request
                    _remove(None, container.id)
                raise
            _remove(self.client, container.id)
            return result

    def _run_container(self, container, timeout_s: float) -> RunResult:
        """Start, wait with the deadline, classify how it ended, collect the logs."""
        import requests

        killed: KilledBy = None
        start = time.monotonic()
        container.start()
        try:
            status = container.wait(timeout=timeout_s)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            # Decide pids vs plain timeout before the kill wipes the cgroup.
            killed = "pids" if _pids_limit_hit(container.id) else "timeout"
            with contextlib.suppress(Exception):
                container.kill()
            status = container.wait(timeout=30)
        wall = time.monotonic() - start
        exit_code = int(status.get("StatusCode", -1))
        container.reload()
        state = container.attrs.get("State", {})
        if killed is None and state.get("OOMKilled"):
            killed = "memory"
        if killed is None and exit_code != 0 and _pids_limit_hit(container.id):
            killed = "pids"
        stdout = tail_text(container.logs(stdout=True, stderr=False))
        stderr = tail_text(container.logs(stdout=False, stderr=True))
        return RunResult(exit_code, stdout, stderr, wall, killed, self.name)


def _ulimit(name: str, value: int):
    from docker.types import Ulimit

    return Ulimit(name=name, soft=value, hard=value)


def leftover_containers(client=None) -> list[str]:
    """Ids of sandbox containers (ours, by label) that still exist, running or not."""
    client = client or docker_client()
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": LABEL})]  # no per-container inspect race


def _remove(client, container_id: str) -> None:
    """Force-remove a container; `client` None opens a fresh connection.

    An interrupt can land while the client's pooled connection is mid-request; reusing that
    connection can then hang until the client timeout, so removal after an interrupt gets a new one.
    """
    import docker

    api = None
    try:
        api = client.api if client is not None else docker.from_env(timeout=60).api
        api.remove_container(container_id, force=True)
    except Exception:  # noqa: BLE001 - already gone, or the daemon is down: nothing more to do here
        pass
    finally:
        if client is None and api is not None:
            with contextlib.suppress(Exception):
                api.close()
