"""π0 / π0.5 plan rules: what the native graph realises and what the validator checks module by module.

The reference's Gemma layers never run as modules (one attention over both streams, openpi's
compute_layer_complete): their norms, projections and MLPs are the units the validator checks one
by one; the stacks and the layer containers are glue. (The analyzer's sample is sample.py's.)
No torch here: the registry imports it.
"""

from __future__ import annotations

# composite classes whose forward is the arch graph's glue (children planned on their own)
GLUE_CLASSES = frozenset(
    {
        "PI0",
        "PaliGemmaWithExpert",
        "PaliGemma",
        "PaliGemmaModel",
        "GemmaExpert",
        "GemmaStack",
        "GemmaDecoderLayer",
        "SiglipVisionModel",
        "SiglipVisionTransformer",
        "SiglipEncoder",
        "ModuleList",
        "ModuleDict",
    }
)
INERT_CLASSES = frozenset({"Identity", "Dropout", "GELU", "SiLU"})
GRAPH_LEAVES = frozenset(
    {"Embedding", "Linear", "LayerNorm", "Conv2d", "MultiModalProjector"}
)  # realised inside the graph's own code
UNUSED_CLASSES: frozenset[str] = frozenset()
