"""The flow-matching noise the native policy draws, reproduced in numpy (skills/flow_euler_denoise).

Element i of call `call`'s (chunk x action_dim) noise takes counter-based splitmix64 draws 2i and
2i+1 of the stream seeded by (seed, call) and turns them into one N(0, 1) value by Box-Muller, in
double, then float32. The analyzer's sample uses call 0, so the native end-to-end run with no
noise given matches PyTorch with this noise.
"""

from __future__ import annotations

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output for states x (uint64, wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _GAMMA
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def flow_noise(seed: int, call: int, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, 1) float32 noise of `shape`, bit-for-bit the native runtime's draw number `call`."""
    n = int(np.prod(shape))
    base = splitmix64(np.uint64(seed & _MASK) ^ splitmix64(np.uint64(call & _MASK)))
    with np.errstate(over="ignore"):
        idx = base + np.arange(2 * n, dtype=np.uint64)
    bits = splitmix64(idx) >> np.uint64(11)
    u = bits.astype(np.float64) * 2.0**-53
    u1, u2 = u[0::2], u[1::2]
    z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    return z.astype(np.float32).reshape(shape)
