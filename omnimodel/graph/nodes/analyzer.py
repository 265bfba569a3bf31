"""analyzer: load the checkpoint, trace one deterministic sample, cache every module's tensors."""

from __future__ import annotations

import time
from pathlib import Path

from omnimodel import archs
from omnimodel.analysis import analyze, write_json
from omnimodel.graph.state import PortState


def analyzer(state: PortState) -> dict:
    """Writes analysis.json and reference/*.gguf."""
    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    policy = archs.get(state["model"]).load_policy(state["checkpoint"], unnorm_key=state.get("unnorm_key"))
    write_json(run_dir / "analysis.json", analyze(policy, run_dir))
    return {"timings": {"analyzer": time.perf_counter() - t0}}
