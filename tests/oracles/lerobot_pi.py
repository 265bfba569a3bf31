"""LeRobot 0.6.1 PI0Policy / PI05Policy as a numerical oracle; run with the oracle venv's python only.

    python lerobot_pi.py run CKPT_DIR INPUTS.npz OUT.npz [--sizes auto|tiny|config] [--steps N]
    python lerobot_pi.py make-tiny {pi0,pi05} OUT_DIR [--seed S]
    python lerobot_pi.py config-fields [DIR ...]

`config-fields` prints {"pi0": [...], "pi05": [...]}: the config.json keys PI0Config / PI05Config
accept (their dataclass fields and draccus' `type`), after LeRobot has parsed each DIR/config.json
as it is (exit 1 with LeRobot's complaint when it refuses one).

`run` builds the policy from a LeRobot-layout dir (config.json + model.safetensors) in fp32 on the CPU,
loads the weights strictly (LeRobot's own key fix-up, then load_state_dict(strict=True); LeRobot's
from_pretrained would only print a warning on a bad file) and calls the model's own sample_actions
with the given noise, bypassing the PaliGemma tokenizer (gated, unreachable) by feeding token ids.

INPUTS.npz: images f32 (B, n_cam, 3, 224, 224) in [-1, 1]; image_masks bool (B, n_cam);
tokens int (B, L); token_mask bool (B, L); state f32 (B, 32) (pi0 only); noise f32 (B, H, 32).
OUT.npz: actions (B, H, 32), the normalised chunk after the Euler loop; v_t1 (B, H, 32), one
denoise_step velocity at t=1 from x=noise; prefix_embs (B, P, D) and prefix_pad_masks (B, P).

What is patched, all config-only (no function that computes a number is replaced):
* torchvision: lerobot.transforms (training-time augmentation) imports it at import time; PyPI's
  wheel is a CUDA build that cannot load beside the CPU torch, so when the real one does not import
  a stub module supplies the names (classes derive from nn.Module, calling anything raises).
* sizes: LeRobot maps the variant names "gemma_2b" / "gemma_300m" to fixed sizes and builds a So400m
  vision config. For other sizes (--sizes tiny = TINY; --sizes auto = `omnimodel_sizes` of the
  omnimodel.json omnimodel writes beside config.json, when present, else LeRobot's own),
  `get_gemma_config` in modeling_pi0/modeling_pi05 returns those
  stacks, and the two HF constructors it calls (PaliGemmaForConditionalGenerationWithPiGemma,
  PiGemmaForCausalLM) get their config's vision sizes, projection_dim and vocab_size set first.
* config.json: nothing; LeRobot parses the file as it is (draccus refuses unknown keys).
* make-tiny only: transformers' AutoTokenizer.from_pretrained in the tokenizer step returns a
  placeholder, so the processor pipeline can be built and saved offline (it records the name only).
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # other policies' import-time notices


@dataclass(frozen=True)
class Stack:
    """One Gemma stack's sizes, in the order of LeRobot's GemmaConfig(width, depth, mlp_dim, heads, kv, hd)."""

    width: int
    depth: int
    mlp: int
    heads: int = 8
    kv_heads: int = 1
    head_dim: int = 64


@dataclass(frozen=True)
class Sizes:
    """Every size LeRobot fixes through the variant names and the So400m vision config."""

    llm: Stack
    expert: Stack
    vision_width: int
    vision_depth: int
    vision_heads: int
    vision_mlp: int
    patch: int
    image: int
    vocab: int

    @classmethod
    def from_omnimodel(cls, d: dict) -> Sizes:
        """From the `omnimodel_sizes` entry omnimodel's writer puts in omnimodel.json."""
        v = d["vision"]
        return cls(
            llm=Stack(**d["llm"]),
            expert=Stack(**d["expert"]),
            vision_width=v["width"],
            vision_depth=v["depth"],
            vision_heads=v["heads"],
            vision_mlp=v["mlp"],
            patch=v["patch"],
            image=v["image"],
            vocab=d["vocab_size"],
        )


# The tiny pi0/pi05 presets (fixed, shared with omnimodel's `zoo make pi0-tiny|pi05-tiny`).
TINY = Sizes(
    llm=Stack(width=512, depth=3, mlp=1024),
    expert=Stack(width=256, depth=3, mlp=512),
    vision_width=256,
    vision_depth=2,
    vision_heads=4,
    vision_mlp=512,
    patch=14,
    image=224,
    vocab=1024,
)
SIDE_FILE = "omnimodel.json"  # omnimodel's preset name and sizes, beside config.json
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
TINY_CONFIG = {  # per policy type: what make-tiny writes beyond the sizes
    "pi05": {"chunk_size": 10, "n_action_steps": 10, "tokenizer_max_length": 200},
    "pi0": {"chunk_size": 50, "n_action_steps": 50, "tokenizer_max_length": 48},
}
STATE_DIM, ACTION_DIM = 8, 7  # make-tiny's robot dims (padded to 32 inside the model)


def _imported_by_lerobot() -> bool:
    """True when the import statement being served sits in lerobot's code.

    Availability probes (transformers' find_spec("torchvision")) must keep seeing no torchvision,
    or transformers takes its torchvision code paths.
    """
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith("<frozen importlib") or f"{os.sep}importlib{os.sep}" in filename):
            return frame.f_globals.get("__name__", "").startswith("lerobot")
        frame = frame.f_back
    return False


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook answering `torchvision` and its submodules with name-only stubs."""

    def find_spec(self, name, path, target=None):
        if (name == "torchvision" or name.startswith("torchvision.")) and _imported_by_lerobot():
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def stub_attr(attr: str, _mod: str = spec.name):
            if attr.startswith("__"):
                raise AttributeError(attr)
            import torch

            def refuse(*_a, **_k):
                raise RuntimeError(f"{_mod}.{attr} is a stub in the LeRobot oracle venv (no torchvision)")

            return type(attr, (torch.nn.Module,), {"__init__": refuse, "__call__": refuse})

        module.__getattr__ = stub_attr
        return module

    def exec_module(self, module):
        return None


def install_torchvision_stub() -> None:
    """Make `import torchvision` succeed with stubs when the real package is absent or unloadable."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        # transformers caches this probe; ask it now, while the answer is the truth (no torchvision).
        from transformers.utils import import_utils

        import_utils.is_torchvision_available()
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _StubFinder())


_SIZES: list[Sizes] = []  # the sizes the patched constructors read (set by use_sizes)


def _gemma_config(module):
    """LeRobot's get_gemma_config with the two variant names mapped to the active sizes."""

    def get_gemma_config(variant: str):
        stacks = {"gemma_2b": _SIZES[0].llm, "gemma_300m": _SIZES[0].expert}
        if variant not in stacks:
            raise ValueError(f"Unknown variant: {variant}")
        st = stacks[variant]
        return module.GemmaConfig(st.width, st.depth, st.mlp, st.heads, st.kv_heads, st.head_dim)

    return get_gemma_config


def _with_vlm_sizes(cls):
    def build(config):
        sz, vc = _SIZES[0], config.vision_config
        vc.hidden_size, vc.num_hidden_layers = sz.vision_width, sz.vision_depth
        vc.num_attention_heads, vc.intermediate_size = sz.vision_heads, sz.vision_mlp
        vc.patch_size, vc.image_size = sz.patch, sz.image
        vc.projection_dim = sz.llm.width
        config.text_config.vocab_size = sz.vocab
        config._vocab_size = sz.vocab  # noqa: SLF001  (LeRobot sets 257152 here)
        config.image_token_index = sz.vocab
        return cls(config=config)

    return build


def _with_vocab(cls):
    def build(config):
        config.vocab_size = _SIZES[0].vocab
        return cls(config=config)

    return build


def use_sizes(sizes: Sizes) -> None:
    """Point LeRobot's pi0/pi05 size lookups at `sizes` (config values only; patched once)."""
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    _SIZES[:] = [sizes]
    for module in (modeling_pi0, modeling_pi05):
        if getattr(module, "_omnimodel_sized", False):
            continue
        module.get_gemma_config = _gemma_config(module)
        module.PaliGemmaForConditionalGenerationWithPiGemma = _with_vlm_sizes(
            module.PaliGemmaForConditionalGenerationWithPiGemma
        )
        module.PiGemmaForCausalLM = _with_vocab(module.PiGemmaForCausalLM)
        module._omnimodel_sized = True


def policy_class(policy_type: str):
    """PI0Policy or PI05Policy for a config.json "type"."""
    if policy_type == "pi05":
        from lerobot.policies.pi05.modeling_pi05 import PI05Policy

        return PI05Policy
    if policy_type == "pi0":
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy

        return PI0Policy
    raise SystemExit(f"lerobot_pi: config.json type {policy_type!r} is not pi0 or pi05")


def _lerobot_config(ckpt: Path, sizes: str):
    """LeRobot's own parse of CKPT/config.json, unmodified; the sizes to use (see the module docstring)."""
    from lerobot.configs import PreTrainedConfig

    chosen = {"tiny": TINY, "config": None}.get(sizes)
    side = ckpt / SIDE_FILE
    if sizes == "auto" and side.is_file():
        ours = json.loads(side.read_text())
        if "omnimodel_sizes" in ours:
            chosen = Sizes.from_omnimodel(ours["omnimodel_sizes"])
    if chosen is not None:
        use_sizes(chosen)
    try:
        config = PreTrainedConfig.from_pretrained(str(ckpt), local_files_only=True)
    except Exception as exc:  # draccus' DecodingError and friends: one line for the test to show
        raise SystemExit(f"lerobot_pi: LeRobot rejects {ckpt}/config.json: {exc}") from exc
    return config, chosen is not None


def config_fields(dirs: list[Path]) -> dict[str, list[str]]:
    """The config.json keys PI0Config and PI05Config accept (their dataclass fields and draccus' `type`).

    Each of `dirs` is parsed by LeRobot first, its config.json untouched.
    """
    import dataclasses

    from lerobot.configs import PreTrainedConfig
    from lerobot.policies.pi0.configuration_pi0 import PI0Config
    from lerobot.policies.pi05.configuration_pi05 import PI05Config

    for d in dirs:
        try:
            PreTrainedConfig.from_pretrained(str(d), local_files_only=True)
        except Exception as exc:  # draccus' DecodingError and friends: one line for the test to show
            raise SystemExit(f"lerobot_pi: LeRobot rejects {d}/config.json: {exc}") from exc

    return {
        name: sorted({"type", *(f.name for f in dataclasses.fields(cls))})
        for name, cls in (("pi0", PI0Config), ("pi05", PI05Config))
    }


def load_policy(ckpt: Path, sizes: str = "auto"):
    """Build the policy from CKPT/config.json and load CKPT/model.safetensors strictly, fp32, CPU, eval."""
    import torch
    from safetensors.torch import load_file

    config, resized = _lerobot_config(ckpt, sizes)
    config.device, config.dtype, config.compile_model = "cpu", "float32", False
    policy = policy_class(config.type)(config)
    state = policy._fix_pytorch_state_dict_keys(load_file(str(ckpt / "model.safetensors")), policy.config)  # noqa: SLF001
    state = {(k if k.startswith("model.") else f"model.{k}"): v for k, v in state.items()}
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        hint = "" if resized else " (a LeRobot-written tiny checkpoint needs --sizes tiny)"
        raise SystemExit(
            f"lerobot_pi: {ckpt} does not load strictly into {type(policy).__name__}{hint}: {str(exc)[:800]}"
        ) from exc
    policy.to(torch.float32).eval()
    return policy


def run(ckpt: Path, inputs: Path, out: Path, sizes: str, steps: int | None) -> None:
    """Run sample_actions (and one t=1 denoise step) on INPUTS with the given noise; write OUT."""
    import numpy as np
    import torch
    from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

    policy = load_policy(ckpt, sizes)
    model = policy.model
    d = np.load(inputs)
    images = torch.from_numpy(d["images"]).float()
    masks = torch.from_numpy(d["image_masks"]).bool()
    imgs = [images[:, i] for i in range(images.shape[1])]
    img_masks = [masks[:, i] for i in range(masks.shape[1])]
    tokens = torch.from_numpy(d["tokens"]).long()
    token_mask = torch.from_numpy(d["token_mask"]).bool()
    noise = torch.from_numpy(d["noise"]).float()
    is_pi0 = policy.config.type == "pi0"
    state = torch.from_numpy(d["state"]).float() if is_pi0 else None
    extra = (state,) if is_pi0 else ()

    with torch.no_grad():
        actions = model.sample_actions(
            imgs, img_masks, tokens, token_mask, *extra, noise=noise.clone(), num_steps=steps
        )
        # The same prefix pass sample_actions runs, then one denoise_step at t=1 from x=noise.
        prefix_embs, prefix_pad, prefix_att = model.embed_prefix(imgs, img_masks, tokens, token_mask)
        att_4d = prepare_attention_masks_4d(make_att_2d_masks(prefix_pad, prefix_att))
        model.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"  # noqa: SLF001
        _, kv = model.paligemma_with_expert.forward(
            attention_mask=att_4d,
            position_ids=torch.cumsum(prefix_pad, dim=1) - 1,
            past_key_values=None,
            inputs_embeds=[prefix_embs, None],
            use_cache=True,
        )
        t1 = torch.ones(noise.shape[0], dtype=torch.float32)
        v_t1 = model.denoise_step(*extra, prefix_pad, kv, noise.clone(), t1)
    np.savez(
        out,
        actions=actions.float().numpy(),
        v_t1=v_t1.float().numpy(),
        prefix_embs=prefix_embs.float().numpy(),
        prefix_pad_masks=prefix_pad.numpy(),
    )


def _randomize(policy, seed: int) -> None:
    """Seeded random values in every parameter (LeRobot's init zeroes norms and adaRMS, hiding bugs)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(policy.named_parameters()):
            std = 0.1 if ("norm" in name and "dense" not in name) else 0.02
            p.copy_(torch.randn(p.shape, generator=g) * std)
        # PaliGemma ties the text embedding to lm_head, and LeRobot's loader copies lm_head over
        # embed_tokens; write them equal, as real checkpoints are.
        pg = policy.model.paligemma_with_expert.paligemma
        pg.model.language_model.embed_tokens.weight.copy_(pg.lm_head.weight)


def _dummy_stats(policy_type: str):
    import torch

    stats = {}
    for key, dim in (("observation.state", STATE_DIM), ("action", ACTION_DIM)):
        base = torch.linspace(-1.0, 1.0, dim)
        stats[key] = {
            "mean": base * 0.1,
            "std": 0.5 + 0.1 * torch.arange(dim, dtype=torch.float32),
            "min": base - 2.0,
            "max": base + 2.0,
            "q01": base - 1.5,
            "q99": base + 1.5,
        }
    return stats


def make_tiny(policy_type: str, out: Path, seed: int) -> None:
    """Instantiate a tiny random policy and save it, plus its processors, with LeRobot's own writers."""
    import numpy as np
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.processor import tokenizer_processor

    use_sizes(TINY)

    class _OfflineTokenizer:
        @staticmethod
        def from_pretrained(name, *a, **k):
            return types.SimpleNamespace(name_or_path=name)

    tokenizer_processor.AutoTokenizer = _OfflineTokenizer
    if policy_type == "pi05":
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
        from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors as make_processors
    else:
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
        from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors as make_processors

    inputs = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)) for c in CAMERAS}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}
    config = Config(device="cpu", input_features=inputs, output_features=outputs, **TINY_CONFIG[policy_type])
    policy = policy_class(policy_type)(config)
    _randomize(policy, seed)
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre, post = make_processors(config, dataset_stats=_dummy_stats(policy_type))
    pre.save_pretrained(out)
    post.save_pretrained(out)

    g = torch.Generator().manual_seed(seed + 1)
    horizon, length = config.chunk_size, config.tokenizer_max_length
    tokens = torch.randint(1, TINY.vocab, (1, length), generator=g)
    token_mask = torch.arange(length)[None] < (length * 2) // 3
    tokens = tokens * token_mask
    np.savez(
        out.parent / f"{out.name}_inputs.npz",
        images=(torch.rand(1, len(CAMERAS), 3, 224, 224, generator=g) * 2 - 1).numpy(),
        image_masks=np.array([[True, True, False]]),
        tokens=tokens.numpy(),
        token_mask=token_mask.numpy(),
        state=(torch.randn(1, 32, generator=g) * 0.5).numpy(),
        noise=torch.randn(1, horizon, 32, generator=g).numpy(),
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry: `run` or `make-tiny`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("ckpt", type=Path)
    r.add_argument("inputs", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--sizes", choices=("auto", "tiny", "config"), default="auto")
    r.add_argument("--steps", type=int, default=None)
    m = sub.add_parser("make-tiny")
    m.add_argument("policy_type", choices=("pi0", "pi05"))
    m.add_argument("out", type=Path)
    m.add_argument("--seed", type=int, default=0)
    sub.add_parser("config-fields").add_argument("dirs", type=Path, nargs="*")
    args = p.parse_args(argv)
    install_torchvision_stub()
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.cmd == "run":
        run(args.ckpt, args.inputs, args.out, args.sizes, args.steps)
    elif args.cmd == "config-fields":
        print(json.dumps(config_fields(args.dirs)))
    else:
        make_tiny(args.policy_type, args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
