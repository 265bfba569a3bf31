"""One node per file, named after its DESIGN.md step."""
