"""The seam between the pipeline and an architecture: what every arch package answers.

An arch is one package under omnimodel/archs/ registered by entry point (group
`omnimodel.archs`); the pipeline asks it how to read a checkpoint, build the reference model,
name its tensors, plan its modules and render its graph, and never names a model itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class Arch(ABC):
    """One architecture: its presets, checkpoint layout, name table, plan rules and graph."""

    name: str = ""  # the family name `omnimodel port NAME` takes
    description: str = ""
    bundled_preset: str = ""  # the tiny preset the quick start ports
    # plan rules: composite classes whose forward is the arch graph's glue (children planned),
    # parameter-free classes that only run inside a realised parent, leaves the graph realises
    # directly, and classes present in checkpoints but never run.
    glue_classes: frozenset[str] = frozenset()
    inert_classes: frozenset[str] = frozenset()
    graph_leaves: frozenset[str] = frozenset()
    unused_classes: frozenset[str] = frozenset()

    # ---- presets and checkpoints
    @abstractmethod
    def presets(self) -> tuple[str, ...]:
        """Names `omnimodel zoo make` accepts for this arch."""

    @abstractmethod
    def claims(self, ckpt: Path, config_json: dict) -> bool:
        """Whether a checkpoint directory (and its config.json content) is this arch's."""

    @abstractmethod
    def read_config(self, ckpt: Path) -> Any:
        """The arch's config dataclass from a checkpoint directory."""

    @abstractmethod
    def load_model(self, ckpt: Path, dtype: Any = None) -> Any:
        """The reference PyTorch model with the checkpoint's weights."""

    @abstractmethod
    def load_policy(self, ckpt: Path, **kwargs) -> Any:
        """A PyTorch policy with `predict_action`, `prepare`, `model` and `stats`."""

    @abstractmethod
    def make_checkpoint(self, preset: str, out_dir: Path, seed: int = 0) -> Path:
        """Write a preset with deterministic random weights in the released layout."""

    @abstractmethod
    def model_info(self, target: str) -> Any:
        """Parameter counts per component for a preset name or a checkpoint directory."""

    # ---- GGUF
    @abstractmethod
    def gguf_names(self, key: str) -> list[str]:
        """GGUF tensor name(s) for one checkpoint key."""

    @abstractmethod
    def runtime_metadata(self, cfg: Any, stats: dict | None) -> dict[str, Any]:
        """The metadata keys the native graph reads, written once each."""

    # ---- graph
    @abstractmethod
    def graph_skills(self) -> tuple[str, ...]:
        """The skills the arch's graph calls, in the order their functions are emitted."""

    def __repr__(self) -> str:
        return f"<arch {self.name}>"
