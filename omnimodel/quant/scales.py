"""Externally fixed block scales (ActQuant supplies these): one dataclass per scale family.

All tensors are indexed [rows, blocks_per_row] (super-block scales) or
[rows, blocks_per_row, sub_blocks] (integer sub-block codes). The encoder stores `d`/`dmin` as
f16 exactly as given (rounded to f16) and then only chooses the quantized values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SymmetricScales:
    """x = d * sub * q (or x = d * q when the type has no sub-blocks).

    - Q8_0, IQ4_NL: `d` per 32-element block, `sub` is None.
    - Q6_K: `sub` int8 codes in [-128, 127], 16 sub-blocks of 16 per super-block of 256.
    - Q3_K: `sub` in [-32, 31], 16 sub-blocks of 16.
    - IQ4_XS: `sub` in [-32, 31], 8 sub-blocks of 32.
    - IQ2/IQ3 lattice types: `sub` is the stored sub-block code (IQ2_XXS/IQ3_XXS 0..15 per 32,
      IQ2_XS/IQ2_S 0..15 per 16, IQ3_S 0..15 per 32); the decoder's scale is d*(0.5+code)*0.25
      (IQ2_XXS, IQ2_XS, IQ2_S), d*(0.5+code)*0.5 (IQ3_XXS) or d*(1+2*code) (IQ3_S).
    - IQ1_S / IQ1_M: `sub` is the 3-bit code 0..7 (per 32 / per 16); the decoder's scale is d*(1+2*code).
    """

    d: torch.Tensor
    sub: torch.Tensor | None = None


@dataclass
class AffineScales:
    """x = d * sc * q - dmin * m with unsigned sub-block codes.

    - Q4_K, Q5_K: 8 sub-blocks of 32 per super-block; `sc`, `m` in [0, 63].
    - Q2_K: 16 sub-blocks of 16; `sc`, `m` in [0, 15].
    """

    d: torch.Tensor
    dmin: torch.Tensor
    sc: torch.Tensor
    m: torch.Tensor
