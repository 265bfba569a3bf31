"""Lattice (IQ2/IQ3) encoders and decoders; grids come from the installed `gguf` package."""

from __future__ import annotations

LATTICE_ENCODERS: dict = {}
LATTICE_DECODERS: dict = {}
