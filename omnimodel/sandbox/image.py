"""The sandbox image: its recipe hash, its tag, and building it from sandbox/build_image.sh."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess

from omnimodel.errors import SandboxError
from omnimodel.paths import REPO_ROOT

log = logging.getLogger(__name__)

RECIPE_DIR = REPO_ROOT / "sandbox"
# Must match the order `build_image.sh` hashes them in.
RECIPE_FILES = ("build_image.sh", "packages.txt", "Dockerfile")
IMAGE_REPO = "omnimodel-sandbox"
LABEL = "org.omnimodel.sandbox"
BUILD_FIX = (
    "bash sandbox/build_image.sh (needs debootstrap and a running dockerd; or bash .ci/setup_system.sh)"
)


def recipe_hash() -> str:
    """The first 12 hex digits of sha256 over the recipe files, as build_image.sh computes it."""
    digest = hashlib.sha256()
    for name in RECIPE_FILES:
        path = RECIPE_DIR / name
        if not path.is_file():
            raise SandboxError(f"sandbox recipe file {path} is missing: restore it from git")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def image_tag() -> str:
    """The tag of the image for the current recipe, omnimodel-sandbox:<recipe-hash12>."""
    return f"{IMAGE_REPO}:{recipe_hash()}"


def build_image() -> str:
    """Build (or find) the image with sandbox/build_image.sh and return its tag."""
    if not shutil.which("debootstrap"):
        raise SandboxError(f"cannot build the sandbox image: debootstrap is missing; run {BUILD_FIX}")
    log.info("building sandbox image %s (debootstrap; a few minutes)", image_tag())
    proc = subprocess.run(["bash", str(RECIPE_DIR / "build_image.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SandboxError(f"sandbox image build failed ({last[0]}); run {BUILD_FIX} to see the full log")
    return image_tag()
