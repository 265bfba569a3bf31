"""The port's typed state: what every node reads and the keys it may return."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict


def _merge(a: dict | None, b: dict | None) -> dict:
    return {**(a or {}), **(b or {})}


class PortState(TypedDict, total=False):
    """One port in flight; nodes return only the keys they change. Big artifacts live in the run dir."""

    # inputs
    model: str
    checkpoint: str
    run_dir: str
    quant: str  # canonical QuantSpec text; read it through omnimodel.quantspec.QuantSpec.parse
    calib: str | None
    calib_frames: int | None  # calibration frame cap (None: every frame)
    backend: str
    sandbox: str
    llm: str | None
    max_iterations: int
    unnorm_key: str | None
    skills_dir: str | None
    llm_budget: dict | None  # {max_calls, max_tokens, max_seconds}; env OMNIMODEL_LLM_MAX_* otherwise
    # progress
    iteration: int
    status: str  # running | ok | failed
    failing_module: str | None
    diagnosis: dict | None
    fixes: Annotated[list[dict], operator.add]
    transform_overrides: Annotated[dict, _merge]
    timings: Annotated[dict, _merge]
    llm_usage: Annotated[dict, _merge]
    error: str | None
