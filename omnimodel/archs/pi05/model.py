"""π0.5's reference model and presets: the shared π0 model with `pi05=True` (omnimodel/archs/pi0/model.py)."""

from __future__ import annotations

from omnimodel.archs.pi0.model import PI0, PiConfig
from omnimodel.archs.pi0.model import PRESETS as _ALL

PRESETS = {name: cfg for name, cfg in _ALL.items() if cfg.pi05}

__all__ = ["PI0", "PRESETS", "PiConfig"]
