"""Run untrusted build and test commands: Docker when the engine answers, else a local subprocess."""

from __future__ import annotations

import logging

from omnimodel.errors import SandboxError
from omnimodel.sandbox.base import RunResult, Sandbox

log = logging.getLogger(__name__)

KINDS = ("auto", "docker", "local")

__all__ = ["KINDS", "RunResult", "Sandbox", "get_sandbox"]


def get_sandbox(kind: str = "auto") -> Sandbox:
    """A sandbox of `kind` (docker, local, auto); `.reason` says in one line why it was chosen."""
    if kind not in KINDS:
        raise SandboxError(f"unknown sandbox {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "local":
        return _local("asked for --sandbox local")
    if kind == "docker":
        from omnimodel.sandbox.docker_backend import DockerSandbox

        box = DockerSandbox()
        box.reason = f"asked for --sandbox docker (image {box.image})"
        return box
    return _auto()


def _auto() -> Sandbox:
    from omnimodel.sandbox.docker_backend import DockerSandbox, docker_client
    from omnimodel.sandbox.image import BUILD_FIX, image_tag

    try:
        client = docker_client()
    except SandboxError as exc:
        return _local(f"Docker engine not answering ({exc})")
    try:
        box = DockerSandbox(client=client, build_if_missing=False)
    except SandboxError:
        return _local(f"Docker engine answers but image {image_tag()} is missing (fix: {BUILD_FIX})")
    box.reason = f"Docker engine answers and image {box.image} is present"
    log.info("sandbox: docker (%s)", box.reason)
    return box


def _local(reason: str) -> Sandbox:
    from omnimodel.sandbox.local import LocalSandbox

    box = LocalSandbox()
    box.reason = reason
    log.info("sandbox: local (%s)", reason)
    return box
