"""The port's agent graph: state, nodes (one per file) and the wiring."""
