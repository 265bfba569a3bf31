"""Where OmniModel keeps its caches and finds its bundled data."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """The cache root: $OMNIMODEL_CACHE, else ~/.cache/omnimodel."""
    root = os.environ.get("OMNIMODEL_CACHE") or os.path.join(Path.home(), ".cache", "omnimodel")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_data_dir() -> Path:
    """Data shipped inside the package (trained checkpoints)."""
    return Path(__file__).resolve().parent / "zoo_data"


def skills_dir() -> Path:
    """The skills/ folder: $OMNIMODEL_SKILLS_DIR, else the repository's."""
    return Path(os.environ.get("OMNIMODEL_SKILLS_DIR") or REPO_ROOT / "skills")


def knowledge_base_dir() -> Path:
    """The knowledge_base/ folder: $OMNIMODEL_KB_DIR, else the repository's."""
    return Path(os.environ.get("OMNIMODEL_KB_DIR") or REPO_ROOT / "knowledge_base")


def templates_dir() -> Path:
    """The templates/cpp folder."""
    return REPO_ROOT / "templates" / "cpp"
