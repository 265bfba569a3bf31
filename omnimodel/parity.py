"""Parity metrics and thresholds shared by the validator, the reflector and the tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per-module cosine thresholds by weight type of the run (port-pipeline issue's acceptance).
COSINE_THRESHOLD = {"f32": 0.99999, "f16": 0.9999, "bf16": 0.9999, "quant": 0.999}
# End-to-end action max abs error in un-normalised units.
ACTION_MAX_ABS = {"f32": 1e-4, "f16": 1e-2, "bf16": 1e-2, "quant": None}
ACTION_COSINE_QUANT = 0.999


@dataclass
class Parity:
    """Agreement of one output with its reference."""

    cosine: float
    max_abs_err: float
    finite: bool
    shape_ok: bool

    def passed(self, threshold: float) -> bool:
        return self.shape_ok and self.finite and self.cosine >= threshold


def compare(got: np.ndarray, ref: np.ndarray) -> Parity:
    """Cosine similarity and max abs error of two arrays (flattened, float64)."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.size != ref.size:
        return Parity(float("nan"), float("inf"), bool(np.isfinite(got).all()), False)
    got = got.reshape(ref.shape)
    finite = bool(np.isfinite(got).all())
    if not finite:
        return Parity(float("nan"), float("inf"), False, True)
    denom = np.linalg.norm(got) * np.linalg.norm(ref)
    cos = float(np.dot(got.ravel(), ref.ravel()) / denom) if denom > 0 else float(np.array_equal(got, ref))
    return Parity(cos, float(np.max(np.abs(got - ref))) if got.size else 0.0, True, True)


def weight_class(quant: str) -> str:
    """Which threshold row a --quant spec falls in."""
    q = quant.lower()
    if q in ("f32", "f16", "bf16"):
        return q
    return "quant"
