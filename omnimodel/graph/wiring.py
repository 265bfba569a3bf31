"""The graph, readable as the DESIGN.md diagram: analyzer → planner → converter → designer → validator ⟲ reflector."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from omnimodel.graph.nodes.analyzer import analyzer
from omnimodel.graph.nodes.converter import converter
from omnimodel.graph.nodes.designer import designer
from omnimodel.graph.nodes.planner import planner
from omnimodel.graph.nodes.reflector import reflector
from omnimodel.graph.nodes.reporter import reporter
from omnimodel.graph.nodes.validator import validator
from omnimodel.graph.state import PortState

NODES = ("analyzer", "planner", "converter", "designer", "validator", "reflector", "reporter")


def after_planner(state: PortState) -> str:
    """A module nothing can realise ends the run with that diagnosis."""
    return "reporter" if state.get("status") == "failed" else "converter"


def after_validator(state: PortState) -> str:
    """Done when every module passed; otherwise reflect while iterations remain."""
    if state.get("status") == "ok":
        return "reporter"
    if state.get("iteration", 0) < state.get("max_iterations", 3):
        return "reflector"
    return "reporter"


def after_reflector(state: PortState) -> str:
    """A fix sends the graph back to where it takes effect; no fix ends the run."""
    if state.get("status") != "retry":
        return "reporter"
    return "converter" if state.get("diagnosis", {}).get("redo") == "converter" else "designer"


def build_graph() -> StateGraph:
    """The uncompiled StateGraph of one port."""
    g = StateGraph(PortState)
    g.add_node("analyzer", analyzer)
    g.add_node("planner", planner)
    g.add_node("converter", converter)
    g.add_node("designer", designer)
    g.add_node("validator", validator)
    g.add_node("reflector", reflector)
    g.add_node("reporter", reporter)
    g.add_edge(START, "analyzer")
    g.add_edge("analyzer", "planner")
    g.add_conditional_edges("planner", after_planner, ["converter", "reporter"])
    g.add_edge("converter", "designer")
    g.add_edge("designer", "validator")
    g.add_conditional_edges("validator", after_validator, ["reflector", "reporter"])
    g.add_conditional_edges("reflector", after_reflector, ["converter", "designer", "reporter"])
    g.add_edge("reporter", END)
    return g
