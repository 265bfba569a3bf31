"""simulator: for quantized runs, the reference of the PyTorch model carrying the GGUF's dequantized weights."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from omnimodel import archs
from omnimodel.graph.state import PortState

SIM_DIR = "reference_sim"


def simulated_reference_dir(run_dir: Path) -> Path:
    """Where the simulator writes its reference tensors (the validator compares against them)."""
    return Path(run_dir) / SIM_DIR / "reference"


def simulator(state: PortState) -> dict:
    """Writes reference_sim/reference/*.gguf from model.gguf; rewritten after every conversion."""
    from omnimodel.analysis import analyze
    from omnimodel.quant_sim import simulate

    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    sim_dir = run_dir / SIM_DIR
    if sim_dir.exists():  # a re-conversion changed model.gguf: the old simulation no longer holds
        shutil.rmtree(sim_dir)
    policy = archs.get(state["model"]).load_policy(state["checkpoint"], unnorm_key=state.get("unnorm_key"))
    simulate(policy.model, run_dir / "model.gguf")
    analyze(policy, sim_dir)
    key = "simulator" if not state.get("iteration") else f"simulator.{state['iteration']}"
    return {"timings": {key: time.perf_counter() - t0}}
