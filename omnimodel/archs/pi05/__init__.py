"""π0.5 (Physical Intelligence): π0 with adaRMS time conditioning and no state token.

`Pi05Arch`, registered under the `omnimodel.archs` entry point `pi05`, reuses the π0 package
(omnimodel/archs/pi0/) for the model, checkpoints, policy and presets; modules placed here
override the shared ones of the same name.
"""

from __future__ import annotations

from omnimodel.archs.pi0.arch import PiArch


class Pi05Arch(PiArch):
    """π0.5: adaRMSNorm (scale, shift, gate) in every expert norm, state as prompt text, quantile normalisation."""

    name = "pi05"
    description = "π0.5: SigLIP + PaliGemma 2B prefix, adaRMS Gemma 300M action expert, 10-step flow matching"
    bundled_preset = "pi05-tiny"
    pi05 = True
