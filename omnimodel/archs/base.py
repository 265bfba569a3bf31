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
    # the policy's actions in OpenVLA-OFT's training convention (gripper 1 open / 0 close), which
    # `omnimodel eval` turns into the robot's (-1 open / +1 close, binarised); False: already the robot's
    eval_postprocess: bool = True
    # actions of each predicted chunk `omnimodel eval` executes before it queries again (None: all)
    eval_replan: int | None = None
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

    def check_checkpoint(self, ckpt: Path) -> None:
        """What `port` checks before its run dir exists (one-line errors): config.json here; an arch adds cheap file checks."""
        self.read_config(ckpt)

    @abstractmethod
    def load_model(self, ckpt: Path, dtype: Any = None) -> Any:
        """The reference PyTorch model with the checkpoint's weights."""

    @abstractmethod
    def load_policy(self, ckpt: Path, **kwargs) -> Any:
        """A PyTorch policy with `predict_action`, `prepare`, `model` and `stats`."""

    @abstractmethod
    def make_checkpoint(self, preset: str, out_dir: Path, seed: int = 0, sets: tuple[str, ...] = ()) -> Path:
        """Write a preset with deterministic random weights in the released layout.

        `sets` are `key=value` edits of the preset's config.json (custom sizes, docs/presets.md);
        an arch that takes none leaves the parameter out and `zoo make --set` says so.
        """

    def takes_sets(self) -> bool:
        """Whether `zoo make --set` works for this arch (its make_checkpoint takes `sets`)."""
        import inspect

        return "sets" in inspect.signature(self.make_checkpoint).parameters

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

    # ---- name table and conversion (not abstract, so an arch package can grow into them)
    def name_table(self) -> tuple[dict[str, str], dict[str, str]]:
        """(KEYS, TENSORS): C++ identifier -> metadata key (no arch prefix) / GGUF tensor name or role prefix."""
        raise self._missing("name_table")

    def module_prefix(self, module: str) -> str | None:
        """The GGUF prefix of the role a checkpoint module sits in (a skill's tensor_map suffixes go after it)."""
        raise self._missing("module_prefix")

    def component_of(self, gguf_name: str) -> str:
        """The component a GGUF tensor counts under (vision, projector, llm, ...)."""
        raise self._missing("component_of")

    def is_quantizable(self, gguf_name: str, shape: tuple[int, ...]) -> bool:
        """Whether a GGUF tensor is in the quantized set."""
        raise self._missing("is_quantizable")

    def owns_config(self, cfg: Any) -> bool:
        """Whether a config object is this arch's config dataclass."""
        return False

    def config_json(self, cfg: Any) -> dict:
        """The config as the checkpoint's config.json spells it (stored whole in the GGUF)."""
        raise self._missing("config_json")

    def default_transforms(self, cfg: Any) -> dict[str, list[str]]:
        """GGUF name -> transforms the converter applies before encoding (e.g. permute_rope)."""
        return {}

    def query_groups(self, cfg: Any) -> int:
        """Query heads per KV head of the language trunk (llama.cpp's mixes give attn_v more bits when > 1)."""
        return 1

    def rope_heads(self, gguf_name: str, cfg: Any) -> int:
        """The head count permute_rope splits a tensor's rows into."""
        raise self._missing("rope_heads")

    def build_model(self, cfg: Any) -> Any:
        """The reference PyTorch model for a config, with the weights it is constructed with."""
        raise self._missing("build_model")

    def read_state_dict(self, ckpt: Path) -> Any:
        """The checkpoint's flat state dict (release keys), memory-mapped where possible."""
        raise self._missing("read_state_dict")

    def read_stats(self, ckpt: Path) -> dict:
        """The checkpoint's dataset statistics ({} when it has none)."""
        return {}

    def shipped_checkpoints(self) -> dict[str, Path]:
        """Name -> directory of the trained checkpoints this arch ships as package data (`omnimodel zoo path`)."""
        return {}

    def random_model(self, preset: str, seed: int = 0) -> tuple[Any, dict]:
        """A preset's reference model with deterministic random weights, and matching random statistics."""
        raise self._missing("random_model")

    def slots(self) -> tuple[Any, ...]:
        """The module roles the graph calls one function for (omnimodel.codegen.slots.Slot), agent-fillable."""
        return ()

    def tower_inputs(self) -> dict[str, str]:
        """Tower label -> path of the module whose input is that tower's hidden state X (calibration hooks)."""
        raise self._missing("tower_inputs")

    def quant_calibration(self) -> Any:
        """The calibration hooks of ActQuant-style quantizers (omnimodel.archs.quant_calibration.QuantCalibration)."""
        raise self._missing("quant_calibration")

    def trainer(self) -> Any:
        """The module holding this arch's behaviour-cloning recipe (TrainConfig, train, evaluate), or None."""
        return None

    def observation_keys(self) -> dict[str, Any]:
        """openpi observation keys (LIBERO example) the policy server reads: {"images": (camera order...), "state": key or None}."""
        raise self._missing("observation_keys")

    def write_test_vectors(self, root: Path | None = None, seed: int = 0) -> list[Path]:
        """(Re)write test_vector.gguf of the skills this arch's graph calls, from a micro instance; the paths."""
        return []

    # ---- graph
    @abstractmethod
    def graph_skills(self) -> tuple[str, ...]:
        """The skills the arch's graph calls, in the order their functions are emitted."""

    def graph_template(self) -> Path:
        """The arch's graph file (Jinja2 C++ against templates/cpp/omni_core.h): graph.cpp.j2 in its package."""
        import inspect

        path = Path(inspect.getfile(type(self))).parent / "graph.cpp.j2"
        if not path.is_file():
            raise self._missing("graph_template")
        return path

    def _missing(self, what: str) -> Exception:
        from omnimodel.errors import ConfigError

        return ConfigError(f"architecture {self.name!r} does not answer {what}(); add it to its arch package")

    def __repr__(self) -> str:
        return f"<arch {self.name}>"


class PackageArch(Arch):
    """An arch whose package follows the usual layout; the seam's answers delegate to its modules.

    `model.py` (PRESETS), `checkpoint.py` (read_config, load_model, read_state_dict,
    config_to_json), `policy.py` (load_policy), `zoo.py` (make_checkpoint, info), `names.py`
    (KEYS, TENSORS, gguf_names, module_prefix, component_of, is_quantizable), `metadata.py`
    (runtime_metadata), `testvectors.py` (write_all). An arch overrides what its package spells
    otherwise; a module or function it lacks gives the seam's one-line error.
    """

    def _module(self, sub: str):
        import importlib

        package = type(self).__module__
        try:
            return importlib.import_module(f"{package}.{sub}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{sub}":
                raise
            raise self._missing(sub) from None

    def _call(self, sub: str, fn: str, *args, **kwargs):
        f = getattr(self._module(sub), fn, None)
        if f is None:
            raise self._missing(fn)
        return f(*args, **kwargs)

    def presets(self) -> tuple[str, ...]:
        return tuple(self._module("model").PRESETS)

    def read_config(self, ckpt: Path) -> Any:
        return self._call("checkpoint", "read_config", Path(ckpt))

    def load_model(self, ckpt: Path, dtype: Any = None) -> Any:
        import torch

        return self._call("checkpoint", "load_model", Path(ckpt), dtype or torch.float32)

    def read_state_dict(self, ckpt: Path) -> Any:
        return self._call("checkpoint", "read_state_dict", Path(ckpt))

    def config_json(self, cfg: Any) -> dict:
        return self._call("checkpoint", "config_to_json", cfg)

    def load_policy(self, ckpt: Path, **kwargs) -> Any:
        return self._call("policy", "load_policy", ckpt, **kwargs)

    def make_checkpoint(self, preset: str, out_dir: Path, seed: int = 0, sets: tuple[str, ...] = ()) -> Path:
        if sets:  # only a package whose zoo takes `sets` is asked with them (the CLI checks first)
            return self._call("zoo", "make_checkpoint", preset, out_dir, seed=seed, sets=tuple(sets))
        return self._call("zoo", "make_checkpoint", preset, out_dir, seed=seed)

    def takes_sets(self) -> bool:
        import inspect

        if not super().takes_sets():
            return False  # the arch overrides make_checkpoint without custom sizes
        fn = getattr(self._module("zoo"), "make_checkpoint", None)
        return fn is not None and "sets" in inspect.signature(fn).parameters

    def model_info(self, target: str) -> Any:
        return self._call("zoo", "info", target)

    def gguf_names(self, key: str) -> list[str]:
        return self._call("names", "gguf_names", key)

    def name_table(self) -> tuple[dict[str, str], dict[str, str]]:
        names = self._module("names")
        return dict(names.KEYS), dict(names.TENSORS)

    def module_prefix(self, module: str) -> str | None:
        return self._call("names", "module_prefix", module)

    def component_of(self, gguf_name: str) -> str:
        return self._call("names", "component_of", gguf_name)

    def is_quantizable(self, gguf_name: str, shape: tuple[int, ...]) -> bool:
        return self._call("names", "is_quantizable", gguf_name, shape)

    def runtime_metadata(self, cfg: Any, stats: dict | None) -> dict[str, Any]:
        return self._call("metadata", "runtime_metadata", cfg, stats)

    def write_test_vectors(self, root: Path | None = None, seed: int = 0) -> list[Path]:
        return self._call("testvectors", "write_all", root, seed)

    def quant_calibration(self) -> Any:
        return self._call("actquant", "calibration", self)  # the package's actquant.py
