"""π0 (Physical Intelligence): SigLIP + PaliGemma prefix, a Gemma action expert, flow matching.

Everything the pipeline needs of this architecture is answered by `Pi0Arch`, registered under the
`omnimodel.archs` entry point `pi0`. The package is shared with π0.5 (omnimodel/archs/pi05/): one
model class switched by `pi05`, as upstream's PI0Pytorch.
"""

from __future__ import annotations

from omnimodel.archs.pi0.arch import PiArch


class Pi0Arch(PiArch):
    """π0: state token + action-time MLP, plain RMSNorm in the expert, mean/std normalisation."""

    name = "pi0"
    description = "π0: SigLIP + PaliGemma 2B prefix, Gemma 300M action expert, 10-step flow matching"
    bundled_preset = "pi0-tiny"
    pi05 = False
