"""The analyzer's sample for π0 / π0.5: every camera, the policy's prompt, the native policy's first noise draw.

Every camera slot is filled (no masked token reaches a module check); the noise is noise.py's draw 0,
which the native runtime draws itself when no noise is given, so the end-to-end check compares like
with like. (The model itself skips the dead prefix computations: the last PaliGemma layer stops
after its K/V and the LLM's final norm never runs, so the planner lists them unused.)
"""

from __future__ import annotations

import numpy as np
import torch


def analysis_sample(policy, seed: int, instruction: str):
    """The analyzer's run: every camera, a state inside the statistics, the native policy's first noise draw."""
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
        actions = unnormalize(
            norm.astype(np.float64), policy.stats.action, spec.action_mode, spec.eps, spec.origin == "openpi"
        )
        tensors = [
            ("images", np.stack(images).astype(np.int32)),
            ("token_ids", inputs.tokens[0].numpy().astype(np.int32)),
            ("pixel_values", torch.cat(inputs.images).float().numpy()),
        ]
        if state is not None:  # π0's state token, or π0.5's prompt (the native text path re-bins it)
            tensors.append(("proprio", state))
        if spec.state_token:
            tensors.append(("proprio_norm", inputs.state.float().numpy()))
        return tensors + [("actions_norm", norm), ("actions", actions.astype(np.float32))]

    return Sample(run, end_to_end, int(inputs.token_mask.sum()))
