"""Shared model pieces (safetensors reading, preprocessing, tokenizers, zoo); `load(DIR)` finds the arch."""

from __future__ import annotations


def load(ckpt_dir, **kwargs):
    """A PyTorch policy for a checkpoint directory, through the arch its config.json names."""
    from omnimodel import archs

    return archs.for_checkpoint(ckpt_dir).load_policy(ckpt_dir, **kwargs)


def load_policy(ckpt_dir, **kwargs):
    """Alias of `load` (same interface as omnimodel.runtime.load)."""
    return load(ckpt_dir, **kwargs)


__all__ = ["load", "load_policy"]
