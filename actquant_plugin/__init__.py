"""ActQuant: action-guided mixed-precision quantization of VLA policies to mixed-bit GGUF (a quantizer plugin)."""

from actquant_plugin.plugin import ActQuant, ActQuantOptions, actquant_factory

__all__ = ["ActQuant", "ActQuantOptions", "actquant_factory"]
