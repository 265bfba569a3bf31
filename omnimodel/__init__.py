"""OmniModel.cpp: port PyTorch robot policies to native GGML builds at numerical parity."""

__version__ = "0.1.0"
