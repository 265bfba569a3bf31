"""Reference PyTorch models we port; `load(CHECKPOINT_DIR)` returns a policy with predict_action."""

from __future__ import annotations

from omnimodel.models.policy import TorchPolicy, load_policy


def load(ckpt_dir, **kwargs) -> TorchPolicy:
    """A PyTorch policy for a checkpoint directory (same interface as omnimodel.runtime.load)."""
    return load_policy(ckpt_dir, **kwargs)


__all__ = ["TorchPolicy", "load", "load_policy"]
