"""The graph, readable as the DESIGN.md diagram: analyzer → planner → converter → [simulator] → designer → [agent] → validator ⟲ reflector → learner."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from omnimodel.graph.nodes.agent import agent
from omnimodel.graph.nodes.analyzer import analyzer
from omnimodel.graph.nodes.converter import converter
from omnimodel.graph.nodes.designer import designer
from omnimodel.graph.nodes.learner import learner
from omnimodel.graph.nodes.planner import planner
from omnimodel.graph.nodes.reflector import reflector
from omnimodel.graph.nodes.reporter import reporter
from omnimodel.graph.nodes.simulator import simulator
from omnimodel.graph.nodes.validator import validator
from omnimodel.graph.state import PortState
from omnimodel.plan import Plan
from omnimodel.quantspec import QuantSpec

NODES = ("analyzer", "planner", "converter", "simulator", "designer", "agent", "validator", "reflector", "learner", "reporter")


def after_planner(state: PortState) -> str:
    """A module nothing can realise ends the run with that diagnosis."""
    return "reporter" if state.get("status") == "failed" else "converter"


def after_converter(state: PortState) -> str:
    """A quantized GGUF gets its simulated reference (PyTorch with the dequantized weights) before the build."""
    return "simulator" if QuantSpec.parse(state.get("quant", "f32")).weight_class == "quant" else "designer"


def after_designer(state: PortState) -> str:
    """On the first pass, modules the agent realises are written before validation."""
    if state.get("iteration", 0) == 0 and state.get("llm") and Plan.read(state["run_dir"]).llm_units():
        return "agent"
    return "validator"


def after_agent(state: PortState) -> str:
    """A spent LLM budget (or a refusal) ends the run with the last diagnosis."""
    return "reporter" if state.get("status") == "failed" else "validator"


def after_validator(state: PortState) -> str:
    """Done when every module passed (skills are learned, the run is filed); otherwise reflect while iterations remain."""
    if state.get("status") == "ok":
        return "learner"
    if state.get("iteration", 0) < state.get("max_iterations", 3):
        return "reflector"
    return "reporter"


def after_reflector(state: PortState) -> str:
    """A fix sends the graph back to where it takes effect; no fix ends the run."""
    if state.get("status") != "retry":
        return "reporter"
    redo = (state.get("diagnosis") or {}).get("redo")
    return {"converter": "converter", "agent": "agent"}.get(redo, "designer")


def build_graph() -> StateGraph:
    """The uncompiled StateGraph of one port."""
    g = StateGraph(PortState)
    g.add_node("analyzer", analyzer)
    g.add_node("planner", planner)
    g.add_node("converter", converter)
    g.add_node("simulator", simulator)
    g.add_node("designer", designer)
    g.add_node("validator", validator)
    g.add_node("reflector", reflector)
    g.add_node("agent", agent)
    g.add_node("learner", learner)
    g.add_node("reporter", reporter)
    g.add_edge(START, "analyzer")
    g.add_edge("analyzer", "planner")
    g.add_conditional_edges("planner", after_planner, ["converter", "reporter"])
    g.add_conditional_edges("converter", after_converter, ["simulator", "designer"])
    g.add_edge("simulator", "designer")
    g.add_conditional_edges("designer", after_designer, ["agent", "validator"])
    g.add_conditional_edges("agent", after_agent, ["validator", "reporter"])
    g.add_conditional_edges("validator", after_validator, ["reflector", "learner", "reporter"])
    g.add_conditional_edges("reflector", after_reflector, ["converter", "designer", "agent", "reporter"])
    g.add_edge("learner", "reporter")
    g.add_edge("reporter", END)
    return g
