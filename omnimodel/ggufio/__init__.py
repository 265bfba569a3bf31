"""GGUF names, metadata keys, writer and reader for OmniModel."""
