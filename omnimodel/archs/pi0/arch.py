"""The seam answers shared by π0 and π0.5: one arch class, switched by `pi05` like the model."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from omnimodel.archs.base import PackageArch
from omnimodel.archs.pi0 import plan as _plan
from omnimodel.errors import CheckpointError, ConfigError

SHARED_PACKAGE = "omnimodel.archs.pi0"


class PiArch(PackageArch):
    """π0 (pi05 False) or π0.5 (True): presets, both checkpoint layouts, the PyTorch reference and policy."""

    pi05: bool = False
    eval_postprocess = False  # actions in the dataset's units (LIBERO: gripper -1 open / +1 close)
    eval_replan = 5  # openpi's LIBERO client (examples/libero/main.py, replan_steps=5)
    glue_classes = _plan.GLUE_CLASSES
    inert_classes = _plan.INERT_CLASSES
    graph_leaves = _plan.GRAPH_LEAVES
    unused_classes = _plan.UNUSED_CLASSES

    def _module(self, sub: str):
        # the π0.5 package holds only what differs; everything else is the shared package's
        own = type(self).__module__
        for package in dict.fromkeys((own, SHARED_PACKAGE)):
            try:
                return importlib.import_module(f"{package}.{sub}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{sub}":
                    raise
        raise self._missing(sub)

    def query_groups(self, cfg: Any) -> int:
        return int(cfg.llm.heads) // int(cfg.llm.kv_heads)  # the expert shares the trunk's attention geometry

    # ---- presets and checkpoints
    def presets(self) -> tuple[str, ...]:
        from omnimodel.archs.pi0.model import PRESETS

        return tuple(n for n, c in PRESETS.items() if c.pi05 == self.pi05)

    def claims(self, ckpt: Path, config_json: dict) -> bool:
        from omnimodel.archs.pi0 import checkpoint as ck

        kind = ck.layout(config_json)
        if kind == "lerobot":
            return ck.LEROBOT_TYPES[config_json["type"]] == self.pi05
        if kind == "openpi":
            try:
                return ck.is_pi05(Path(ckpt), config_json) == self.pi05
            except CheckpointError:
                return False
        return False

    def read_config(self, ckpt: Path) -> Any:
        from omnimodel.archs.pi0.checkpoint import read_config

        cfg = read_config(Path(ckpt))
        if cfg.pi05 != self.pi05:
            other = "pi05" if cfg.pi05 else "pi0"
            raise CheckpointError(f"{ckpt}: this is a {other} checkpoint, not {self.name}")
        return cfg

    def load_model(self, ckpt: Path, dtype: Any = None) -> Any:
        import torch

        from omnimodel.archs.pi0.checkpoint import load_model

        self.read_config(ckpt)
        return load_model(Path(ckpt), dtype or torch.float32)

    def load_policy(self, ckpt: Path, **kwargs) -> Any:
        from omnimodel.archs.pi0.policy import load_policy

        self.read_config(ckpt)
        return load_policy(ckpt, **kwargs)

    def make_checkpoint(self, preset: str, out_dir: Path, seed: int = 0, sets: tuple[str, ...] = ()) -> Path:
        from omnimodel.archs.pi0 import zoo

        if preset not in self.presets():
            raise ConfigError(
                f"unknown {self.name} preset {preset!r}: choose one of {', '.join(self.presets())}"
            )
        return zoo.make_checkpoint(preset, out_dir, seed=seed, sets=tuple(sets))

    def model_info(self, target: str) -> Any:
        from omnimodel.archs.pi0 import zoo

        return zoo.info(target)

    def owns_config(self, cfg: Any) -> bool:
        from omnimodel.archs.pi0.model import PiConfig

        return type(cfg) is PiConfig and cfg.pi05 == self.pi05

    def config_json(self, cfg: Any) -> dict:
        from omnimodel.archs.pi0.checkpoint import config_to_json, side_to_json

        return {**config_to_json(cfg), **side_to_json(cfg)}  # config.json and omnimodel.json in one

    def build_model(self, cfg: Any) -> Any:
        from omnimodel.archs.pi0.model import PI0

        return PI0(cfg)

    def read_stats(self, ckpt: Path) -> dict:
        from omnimodel.archs.pi0.checkpoint import read_stats

        stats = read_stats(Path(ckpt)).to_dict()
        return (
            {"dataset": stats} if stats else {}
        )  # one dataset, as the converter's unnorm_key choice expects

    def random_model(self, preset: str, seed: int = 0) -> tuple[Any, dict]:
        from omnimodel.archs.pi0 import zoo

        if preset not in self.presets():
            raise ConfigError(
                f"unknown {self.name} preset {preset!r}: choose one of {', '.join(self.presets())}"
            )
        return zoo.build_random_model(preset, seed), zoo.random_stats(seed).to_dict()

    def shipped_checkpoints(self) -> dict[str, Path]:
        from omnimodel.archs.pi0 import zoo

        return {n: zoo.SHIPPED_DIR / n for n in zoo.SHIPPED if n.split("-")[0] == self.name}

    def trainer(self) -> Any:
        from omnimodel.archs.pi0 import train

        return train

    def observation_keys(self) -> dict[str, Any]:
        return {"images": ("observation/image", "observation/wrist_image"), "state": "observation/state"}

    # ---- graph: the GGUF/C++ side lives in its own modules
    def graph_skills(self) -> tuple[str, ...]:
        module = self._module("names")
        skills = getattr(module, "GRAPH_SKILLS", None)
        if skills is None:
            raise self._missing("graph_skills")
        return tuple(skills)

    # ---- the native side (names.py, metadata.py, plan.py, testvectors.py, graph.cpp.j2 of the shared package)
    def graph_template(self) -> Path:
        return Path(__file__).parent / "graph.cpp.j2"  # one graph for both, switched by metadata

    def read_state_dict(self, ckpt: Path) -> Any:
        # dead weights (names.dead_keys: the last PaliGemma layer's q/o/MLP/post-norm depend on the depth) are not converted
        from omnimodel.archs.pi0.checkpoint import read_state_dict
        from omnimodel.archs.pi0.names import dead_keys

        sd = read_state_dict(Path(ckpt))
        dead = dead_keys(list(sd), self.read_config(ckpt).llm.depth)
        return {k: v for k, v in sd.items() if k not in dead}

    def write_test_vectors(self, root: Path | None = None, seed: int = 0) -> list[Path]:
        if self.pi05:  # one micro instance per arch; π0.5's writes the shared skills' vectors
            return self._call("testvectors", "write_all", root, seed)
        return self._call("testvectors", "write_pi0", root, seed)
