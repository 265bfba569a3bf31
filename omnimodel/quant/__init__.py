"""GGML block quantization: formats, vectorised encoders/decoders, and the quantizer plugins."""

from omnimodel.quant.decoders import decode
from omnimodel.quant.encoders import encode, supported_types
from omnimodel.quant.formats import FORMATS, QuantFormat, fitting_type, get_format
from omnimodel.quant.scales import AffineScales, SymmetricScales

__all__ = [
    "FORMATS", "AffineScales", "QuantFormat", "SymmetricScales", "decode", "encode", "fitting_type",
    "get_format", "supported_types",
]
