"""π0 / π0.5 plan rules and the analyzer's sample: what the native graph realises and how it is checked.

The reference's Gemma layers never run as modules (one attention over both streams, openpi's
compute_layer_complete): their norms, projections and MLPs are the units the validator checks one
by one; the stacks and the layer containers are glue. The sample fills every camera slot (no
masked token reaches a module check), writes the prompt as the policy does, and fixes the noise to
the native policy's first draw (noise.py), so the end-to-end check compares like with like.
"""

from __future__ import annotations

import numpy as np

# composite classes whose forward is the arch graph's glue (children planned on their own)
GLUE_CLASSES = frozenset(
    {
        "PI0", "PaliGemmaWithExpert", "PaliGemma", "PaliGemmaModel", "GemmaExpert", "GemmaStack",
        "GemmaDecoderLayer", "GemmaAttention", "SiglipVisionModel", "SiglipVisionTransformer",
        "SiglipEncoder", "ModuleList", "ModuleDict",
    }
)
INERT_CLASSES = frozenset({"Identity", "Dropout", "GELU", "SiLU"})
GRAPH_LEAVES = frozenset({"Embedding", "Linear", "LayerNorm", "Conv2d", "SiglipEmbeddings", "MultiModalProjector"})  # realised inside the graph's own code
UNUSED_CLASSES: frozenset[str] = frozenset()


def analysis_sample(policy, seed: int, instruction: str):
    """The analyzer's run: every camera, a state inside the statistics, the native policy's first noise draw."""
    import torch

    from omnimodel.analysis import Sample, sample_observation
    from omnimodel.archs.pi0.metadata import NOISE_SEED
    from omnimodel.archs.pi0.noise import flow_noise
    from omnimodel.archs.pi0.policy import unnormalize

    model, cfg, spec = policy.model, policy.cfg, policy.spec
    images, _ = sample_observation(seed, cfg.vision.image, 0, {}, n_images=cfg.num_cameras)
    state = None
    if spec.state_token or spec.state_in_prompt:
        st = policy.stats.state
        lo, hi = (st["q01"], st["q99"]) if "q01" in st else (st["mean"] - st["std"], st["mean"] + st["std"])
        u = np.random.default_rng(seed + 7).uniform(0.1, 0.9, len(lo))
        state = (lo + (hi - lo) * u).astype(np.float32)
    inputs = policy.prepare(images, state, instruction)
    noise = torch.from_numpy(flow_noise(NOISE_SEED, 0, (1, cfg.chunk, cfg.action_dim)))

    def run():
        return model(inputs.images, inputs.image_masks, inputs.tokens, inputs.token_mask, inputs.state, noise)

    def end_to_end(out) -> list[tuple[str, np.ndarray]]:
        norm = out[0].float().numpy()[:, : spec.action_dim]
        actions = unnormalize(norm.astype(np.float64), policy.stats.action, spec.action_mode, spec.eps, spec.origin == "openpi")
        tensors = [
            ("images", np.stack(images).astype(np.int32)),
            ("token_ids", inputs.tokens[0].numpy().astype(np.int32)),
            ("pixel_values", torch.cat(inputs.images).float().numpy()),
        ]
        if spec.state_token:
            tensors += [("proprio", state), ("proprio_norm", inputs.state.float().numpy())]
        return tensors + [("actions_norm", norm), ("actions", actions.astype(np.float32))]

    return Sample(run, end_to_end, int(inputs.token_mask.sum()))
