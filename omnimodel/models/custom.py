"""Modules of a new class in a checkpoint: config.json `omnimodel_custom_modules` names them.

`{"omnimodel_custom_modules": {"proprio_projector": {"file": "custom_modules.py", "class":
"GeluLayerScaleProprio", "kwargs": {...}}}}` replaces the submodule at that path with
`Class(**kwargs)` before the weights load; the Python file lives in the checkpoint directory (as
Hugging Face's remote code does). This is how a model with a module no skill covers is ported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from torch import nn

from omnimodel.errors import CheckpointError

KEY = "omnimodel_custom_modules"
TRUST_ENV = "OMNIMODEL_TRUST_REMOTE_CODE"


def remote_code_trusted() -> bool:
    """Whether the user opted in to running Python code shipped inside a checkpoint."""
    return os.environ.get(TRUST_ENV) == "1"


def custom_specs(ckpt: Path) -> dict[str, dict]:
    """The `omnimodel_custom_modules` entry of a checkpoint's config.json ({} when absent)."""
    path = Path(ckpt) / "config.json"
    try:
        return dict(json.loads(path.read_text()).get(KEY) or {})
    except (OSError, ValueError):
        return {}


def load_class(ckpt: Path, spec: dict) -> type[nn.Module]:
    """Import `spec["class"]` from `spec["file"]` inside the checkpoint directory."""
    file = (Path(ckpt) / spec.get("file", "")).resolve()
    if not file.is_file() or not file.is_relative_to(Path(ckpt).resolve()):
        raise CheckpointError(
            f"{ckpt}: custom module file {spec.get('file')!r} not found inside the checkpoint"
        )
    name = "omnimodel_custom_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
    module = sys.modules.get(name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        loader_spec.loader.exec_module(module)
    cls = getattr(module, spec.get("class", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"{file}: no nn.Module class {spec.get('class')!r}; fix {KEY} in config.json")
    return cls


def install_custom_modules(model: nn.Module, ckpt: Path) -> None:
    """Replace the submodules that config.json declares custom (call under the device context the model was built in)."""
    specs = custom_specs(ckpt)
    if specs and not remote_code_trusted():
        files = sorted({str(s.get("file")) for s in specs.values()})
        raise CheckpointError(
            f"{ckpt}: config.json declares custom module code ({', '.join(files)}); it runs only with "
            f"--trust-remote-code (or {TRUST_ENV}=1) after you have read it"
        )
    for path, spec in specs.items():
        parent_name, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not hasattr(parent, attr):
            raise CheckpointError(f"{ckpt}: {KEY} names {path!r}, which the model does not have")
        setattr(parent, attr, load_class(ckpt, spec)(**dict(spec.get("kwargs") or {})))
