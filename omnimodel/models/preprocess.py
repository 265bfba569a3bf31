"""What the policies' action prediction does to inputs and outputs: center crop, tower normalisation, (un)normalisation."""

from __future__ import annotations

import numpy as np

from omnimodel.errors import ConfigError

# The vision towers' released processor normalisation: ImageNet values rounded to bfloat16 for
# DINOv2; SigLIP 0.5/0.5.
DINO_MEAN = (0.484375, 0.455078125, 0.40625)
DINO_STD = (0.228515625, 0.2236328125, 0.224609375)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

CROP_SCALE = 0.9  # an AREA fraction


def center_crop(img: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """tf.image.crop_and_resize of the centred sqrt(crop_scale) box back to the input size, as uint8."""
    h, w, _ = img.shape
    x = img.astype(np.float32) * np.float32(1.0 / 255.0)
    s = np.float32(np.sqrt(np.float32(crop_scale)))
    lo, hi = np.float32((1 - s) / 2), np.float32((1 + s) / 2)

    def coords(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32((hi - lo) * (n - 1) / (n - 1)) if n > 1 else np.float32(0)
        pos = lo * np.float32(n - 1) + np.arange(n, dtype=np.float32) * scale
        top = np.floor(pos).astype(np.int64)
        bottom = np.ceil(pos).astype(np.int64)
        frac = (pos - top).astype(np.float32)
        valid = (pos >= 0) & (pos <= n - 1)
        return np.clip(top, 0, n - 1), np.clip(bottom, 0, n - 1), frac, valid

    yt, yb, yf, yv = coords(h)
    xl, xr, xf, xv = coords(w)
    top = x[yt][:, xl] + (x[yt][:, xr] - x[yt][:, xl]) * xf[None, :, None]
    bot = x[yb][:, xl] + (x[yb][:, xr] - x[yb][:, xl]) * xf[None, :, None]
    out = top + (bot - top) * yf[:, None, None]
    out = out * (yv[:, None, None] & xv[None, :, None])  # extrapolation value 0
    out = np.clip(out, 0.0, 1.0)
    return (out * np.float32(255.5)).astype(np.uint8)


def pixel_values(images: list[np.ndarray], image_size: int = 224, crop: bool = True) -> np.ndarray:
    """(1, 6 * n_images, H, W) float32: per image [DINOv2-normalised RGB, SigLIP-normalised RGB]."""
    chans = []
    for img in images:
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ConfigError(f"images must be HxWx3 uint8 arrays, got {img.dtype} {img.shape}")
        if img.shape[:2] != (image_size, image_size):
            raise ConfigError(f"images must be {image_size}x{image_size} (the policy boundary), got {img.shape[:2]}")
        if crop:
            img = center_crop(img)
        x = img.astype(np.float32) / np.float32(255.0)
        for mean, std in ((DINO_MEAN, DINO_STD), (SIGLIP_MEAN, SIGLIP_STD)):
            chans.append(((x - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1))
    return np.concatenate(chans, axis=0)[None].astype(np.float32)


def normalize_proprio(proprio: np.ndarray, stats: dict) -> np.ndarray:
    """clip(2 (p - q01) / (q99 - q01 + 1e-8) - 1, -1, 1) on every proprio dimension."""
    q01 = np.asarray(stats["proprio"]["q01"], np.float32)
    q99 = np.asarray(stats["proprio"]["q99"], np.float32)
    p = np.asarray(proprio, np.float32)
    if p.shape != q01.shape:
        raise ConfigError(f"proprio must have shape {q01.shape}, got {p.shape}")
    return np.clip(2 * (p - q01) / (q99 - q01 + 1e-8) - 1, -1, 1).astype(np.float32)


def unnormalize_actions(actions: np.ndarray, stats: dict) -> np.ndarray:
    """BOUNDS_Q99: a = 0.5 (x + 1)(q99 - q01 + 1e-8) + q01 where the mask is true; the rest pass through."""
    a = stats["action"]
    q01, q99 = np.asarray(a["q01"], np.float32), np.asarray(a["q99"], np.float32)
    mask = np.asarray(a.get("mask", [True] * len(q01)), bool)
    x = np.asarray(actions, np.float32)
    return np.where(mask, 0.5 * (x + 1) * (q99 - q01 + 1e-8) + q01, x).astype(np.float32)


def normalize_actions(actions: np.ndarray, stats: dict) -> np.ndarray:
    """Inverse of unnormalize_actions (clipped to [-1, 1] on masked dims): training targets."""
    a = stats["action"]
    q01, q99 = np.asarray(a["q01"], np.float32), np.asarray(a["q99"], np.float32)
    mask = np.asarray(a.get("mask", [True] * len(q01)), bool)
    x = np.asarray(actions, np.float32)
    return np.where(mask, np.clip(2 * (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1), x).astype(np.float32)


def select_stats(all_stats: dict, unnorm_key: str | None) -> tuple[str, dict]:
    """The statistics to un-normalise with: the named key, its `_no_noops` variant, or the only one."""
    if unnorm_key is None:
        if len(all_stats) != 1:
            raise ConfigError(f"dataset_statistics.json has {len(all_stats)} keys ({', '.join(all_stats)}); pass unnorm_key")
        unnorm_key = next(iter(all_stats))
    for key in (unnorm_key, f"{unnorm_key}_no_noops"):
        if key in all_stats:
            return key, all_stats[key]
    raise ConfigError(f"unnorm_key {unnorm_key!r} not in dataset_statistics.json (has {', '.join(all_stats)})")
