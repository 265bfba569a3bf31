"""The quantizer's PyTorch simulation rounds activations exactly as GGML's CPU matmul does."""

from __future__ import annotations

import gguf
import numpy as np
import torch

from omnimodel.quant_sim import ACTIVATION_TYPE, quantize_activations, rope_permute, rope_unpermute


def test_q8_0_activation_rounding_equals_gguf_q8_0():
    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(0)) * 3
    ref = gguf.quants.dequantize(gguf.quants.quantize(x.numpy(), gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(quantize_activations(x, "Q8_0").numpy(), ref)


def test_q8_k_activation_rounding_grid():
    x = torch.randn(4, 512, generator=torch.Generator().manual_seed(1))
    y = quantize_activations(x, "Q8_K").reshape(-1, 256)
    xb = x.reshape(-1, 256)
    peak = xb.gather(-1, xb.abs().argmax(-1, keepdim=True))
    d = -peak / 127  # GGML's d = 1 / iscale, iscale = -127 / peak
    q = y / d
    assert torch.allclose(q, q.round(), atol=1e-3) and q.max() <= 127 + 1e-3 and q.min() >= -127 - 1e-3
    assert torch.allclose(y.gather(-1, xb.abs().argmax(-1, keepdim=True)), peak)  # the peak is exact
    assert (y - xb).abs().max() <= (d.abs() / 2 + 1e-6).max()


def test_every_quantized_weight_type_has_an_activation_type_and_rope_round_trips():
    assert ACTIVATION_TYPE["Q4_K"] == "Q8_K" and ACTIVATION_TYPE["IQ4_NL"] == "Q8_0" and ACTIVATION_TYPE["F16"] == "F16"
    w = np.random.default_rng(0).normal(size=(64, 16))
    assert np.array_equal(rope_unpermute(rope_permute(w, 4), 4), w)
