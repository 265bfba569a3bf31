"""Read π0 / π0.5 checkpoints in the two layouts users have, and write LeRobot's.

openpi PyTorch (examples/convert_jax_model_to_pytorch.py): `config.json` {action_dim,
action_horizon, paligemma_variant, action_expert_variant, precision}, `model.safetensors` with
openpi's keys, `assets/<asset_id>/norm_stats.json`. It does not record π0 vs π0.5; the weights
do (time_mlp_* / adaRMS dense vs state_proj / action_time_mlp_*).

LeRobot (`policy.type` pi0 | pi05): `config.json` with `"type"`, `model.safetensors` whose keys
carry `model.` (LeRobot-trained) or not (openpi conversions on the Hub), the PaliGemma text
table often only as `paligemma.lm_head.weight` (tied, deduplicated on save), normaliser
statistics in the `policy_preprocessor.json` / `policy_postprocessor.json` step state files, or
as `normalize_inputs.buffer_*` tensors inside model.safetensors in older checkpoints.

We write the LeRobot layout, config.json holding only fields LeRobot's PI0Config / PI05Config know
(it refuses any other). What LeRobot cannot say lives beside it in `omnimodel.json`: the preset name
(`omnimodel_preset`) and, for sizes other than the released ones, every size (`omnimodel_sizes`,
since LeRobot's config only names the two released Gemma variants). A checkpoint without
omnimodel.json has the released sizes; one written before the side file keeps both keys in
config.json, where they are still read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from omnimodel.archs.pi0.model import PI0, VARIANTS, GemmaConfig, PiConfig, SiglipConfig
from omnimodel.archs.validate import (
    MAX_HEADS,
    MAX_IMAGE,
    MAX_LAYERS,
    MAX_VOCAB,
    MAX_WIDTH,
    Field,
    check_divides,
    check_section,
    check_tensors,
    fail,
    require_list,
    require_mapping,
)
from omnimodel.errors import CheckpointError, ConfigError
from omnimodel.models.safetensors_mmap import open_safetensors, read_safetensors_header

WEIGHTS = "model.safetensors"
SIDE_FILE = "omnimodel.json"  # our entries LeRobot's config.json has no field for
SIDE_KEYS = ("omnimodel_preset", "omnimodel_sizes")
PREPROCESSOR = "policy_preprocessor.json"
POSTPROCESSOR = "policy_postprocessor.json"
LEROBOT_TYPES = {"pi0": False, "pi05": True}
EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
EXPERT_LM_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"
# older transformers spellings -> ours (prefix rewrite)
_OLD_PREFIXES = (
    ("paligemma_with_expert.paligemma.vision_tower.", "paligemma_with_expert.paligemma.model.vision_tower."),
    (
        "paligemma_with_expert.paligemma.multi_modal_projector.",
        "paligemma_with_expert.paligemma.model.multi_modal_projector.",
    ),
    (
        "paligemma_with_expert.paligemma.language_model.model.",
        "paligemma_with_expert.paligemma.model.language_model.",
    ),
    ("paligemma_with_expert.paligemma.language_model.lm_head.", "paligemma_with_expert.paligemma.lm_head."),
)
_LEGACY_STATS = re.compile(
    r"^(?:model\.)?(normalize_inputs|normalize_targets|unnormalize_outputs)\.buffer_(\w+)\.(\w+)$"
)
_PI0_ONLY = ("state_proj.", "action_time_mlp_in.", "action_time_mlp_out.")
_PI05_ONLY = ("time_mlp_in.", "time_mlp_out.")
_ADARMS = re.compile(r"gemma_expert\.model\.(layers\.\d+\.(input|post_attention)_layernorm|norm)\.dense\.")

_SIZE_FIELDS_VISION = (
    Field("width", int, 1, MAX_WIDTH),
    Field("depth", int, 1, MAX_LAYERS),
    Field("heads", int, 1, MAX_HEADS),
    Field("mlp", int, 1, MAX_WIDTH),
    Field("patch", int, 1, MAX_IMAGE),
    Field("image", int, 1, MAX_IMAGE),
)
_SIZE_FIELDS_GEMMA = (
    Field("width", int, 2, MAX_WIDTH),
    Field("depth", int, 1, MAX_LAYERS),
    Field("mlp", int, 1, MAX_WIDTH),
    Field("heads", int, 1, MAX_HEADS),
    Field("kv_heads", int, 1, MAX_HEADS),
    Field("head_dim", int, 2, 4096),
)
_LEROBOT_FIELDS = (
    Field("type", str),
    Field("paligemma_variant", str, optional=True),
    Field("action_expert_variant", str, optional=True),
    Field("chunk_size", int, 1, 4096, optional=True),
    Field("n_action_steps", int, 1, 4096, optional=True),
    Field("max_state_dim", int, 1, 4096, optional=True),
    Field("max_action_dim", int, 1, 4096, optional=True),
    Field("num_inference_steps", int, 1, 1000, optional=True),
    Field("min_period", float, 1e-12, 1e12, optional=True),
    Field("max_period", float, 1e-12, 1e12, optional=True),
    Field("tokenizer_max_length", int, 1, 1 << 16, optional=True),
    Field("empty_cameras", int, 0, 64, optional=True),
    Field("use_relative_actions", bool, optional=True),
)
_SIDE_FIELDS = (
    Field("omnimodel_preset", str, optional=True),
    Field("omnimodel_sizes", dict, optional=True),
)
_OPENPI_FIELDS = (
    Field("action_dim", int, 1, 4096),
    Field("action_horizon", int, 1, 4096),
    Field("paligemma_variant", str),
    Field("action_expert_variant", str),
    Field("precision", str, optional=True),
    Field("max_token_len", int, 1, 1 << 16, optional=True),
    Field("discrete_state_input", bool, optional=True),
    Field("extra_delta_transform", bool, optional=True),
)
NORM_NAMES = {
    "MEAN_STD": "mean_std",
    "QUANTILES": "quantile",
    "QUANTILE10": "quantile10",
    "MIN_MAX": "min_max",
    "IDENTITY": "identity",
}


# ----------------------------------------------------------------------------- layout and config


def layout(raw: dict) -> str:
    """'lerobot' (config has type pi0/pi05), 'openpi' (the converter's five keys) or '' (neither)."""
    if raw.get("type") in LEROBOT_TYPES:
        return "lerobot"
    if "type" not in raw and "action_expert_variant" in raw and "action_horizon" in raw:
        return "openpi"
    return ""


def weight_names(ckpt: Path) -> list[str]:
    """The tensor names of model.safetensors, from its header only."""
    path = Path(ckpt) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a π0/π0.5 checkpoint keeps its weights in {WEIGHTS}")
    return list(read_safetensors_header(path))


def weights_say_pi05(names: list[str]) -> bool | None:
    """True for π0.5 tensors, False for π0 tensors, None when they show neither."""
    bare = [n.removeprefix("model.") for n in names]
    if any(n.startswith(_PI05_ONLY) for n in bare) or any(_ADARMS.search(n) for n in bare):
        return True
    if any(n.startswith(_PI0_ONLY) for n in bare):
        return False
    return None


def is_pi05(ckpt: Path, raw: dict) -> bool:
    """π0.5 or π0: LeRobot's `type`, else the weights (openpi records neither)."""
    if layout(raw) == "lerobot":
        return LEROBOT_TYPES[raw["type"]]
    found = weights_say_pi05(weight_names(ckpt))
    if found is None:
        raise CheckpointError(
            f"{Path(ckpt) / WEIGHTS}: neither π0 (state_proj) nor π0.5 (time_mlp_in) tensors; not a π checkpoint"
        )
    return found


def _sizes(source: str, raw: dict) -> tuple[SiglipConfig, GemmaConfig, GemmaConfig, int]:
    """omnimodel_sizes (presets) checked field by field, with the cross-size constraints."""
    sizes = require_mapping(source, "omnimodel_sizes", raw)
    v = check_section(
        source,
        require_mapping(source, "omnimodel_sizes.vision", sizes.get("vision")),
        _SIZE_FIELDS_VISION,
        "omnimodel_sizes.vision.",
    )
    g = [
        check_section(
            source,
            require_mapping(source, f"omnimodel_sizes.{k}", sizes.get(k)),
            _SIZE_FIELDS_GEMMA,
            f"omnimodel_sizes.{k}.",
        )
        for k in ("llm", "expert")
    ]
    vocab = check_section(source, sizes, (Field("vocab_size", int, 16, MAX_VOCAB),))["vocab_size"]
    check_divides(
        source, "omnimodel_sizes.vision.width", v["width"], "omnimodel_sizes.vision.heads", v["heads"]
    )
    check_divides(
        source, "omnimodel_sizes.vision.image", v["image"], "omnimodel_sizes.vision.patch", v["patch"]
    )
    for k, d in zip(("llm", "expert"), g, strict=True):
        check_divides(
            source, f"omnimodel_sizes.{k}.heads", d["heads"], f"omnimodel_sizes.{k}.kv_heads", d["kv_heads"]
        )
        check_divides(source, f"omnimodel_sizes.{k}.head_dim", d["head_dim"], "2 (RoPE halves)", 2)
    check_divides(source, "omnimodel_sizes.expert.width", g[1]["width"], "2 (time embedding halves)", 2)
    for key in (
        "depth",
        "heads",
        "kv_heads",
        "head_dim",
    ):  # the stacks run layer by layer through one attention
        if g[0][key] != g[1][key]:
            raise fail(
                source,
                f"omnimodel_sizes.expert.{key}",
                g[1][key],
                f"{g[0][key]} like the LLM (both share one attention)",
            )
    return SiglipConfig(**v), GemmaConfig(**g[0]), GemmaConfig(**g[1]), vocab


def _variant(source: str, key: str, name: object) -> GemmaConfig:
    if name not in VARIANTS:
        raise fail(source, key, name, f"one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _image_size(source: str, raw: dict) -> int:
    res = raw.get("image_resolution", [224, 224])
    res = require_list(source, "image_resolution", res, 2)
    if (
        not all(isinstance(r, int) and not isinstance(r, bool) and 14 <= r <= MAX_IMAGE for r in res)
        or res[0] != res[1]
    ):
        raise fail(source, "image_resolution", res, f"two equal integers in [14, {MAX_IMAGE}]")
    return res[0]


def visual_features(source: str, raw: dict) -> list[str]:
    """LeRobot input_features of type VISUAL, in config order."""
    feats = require_mapping(source, "input_features", raw.get("input_features") or {})
    out = []
    for name, f in feats.items():
        f = require_mapping(source, f"input_features.{name}", f)
        if f.get("type") == "VISUAL":
            out.append(name)
    return out


def feature_dim(source: str, raw: dict, section: str, name: str) -> int | None:
    """The first shape entry of input/output feature `name` (None when absent)."""
    feats = require_mapping(source, section, raw.get(section) or {})
    if name not in feats:
        return None
    f = require_mapping(source, f"{section}.{name}", feats[name])
    shape = require_list(source, f"{section}.{name}.shape", f.get("shape"))
    if (
        len(shape) != 1
        or not isinstance(shape[0], int)
        or isinstance(shape[0], bool)
        or not 1 <= shape[0] <= 4096
    ):
        raise fail(source, f"{section}.{name}.shape", shape, "one integer in [1, 4096]")
    return shape[0]


def norm_modes(source: str, raw: dict, pi05: bool) -> tuple[str, str]:
    """(state mode, action mode) from LeRobot's normalization_mapping (defaults: π0 mean/std, π0.5 quantiles)."""
    default = "QUANTILES" if pi05 else "MEAN_STD"
    mapping = require_mapping(source, "normalization_mapping", raw.get("normalization_mapping") or {})
    out = []
    for key in ("STATE", "ACTION"):
        mode = mapping.get(key, default)
        if mode not in NORM_NAMES:
            raise fail(source, f"normalization_mapping.{key}", mode, f"one of {', '.join(NORM_NAMES)}")
        out.append(NORM_NAMES[mode])
    return out[0], out[1]


def config_from_json(
    raw: dict, source: str, pi05: bool | None = None, side: dict | None = None, side_source: str = ""
) -> PiConfig:
    """PiConfig from either layout's config.json and our side entries, every field checked before any module is built.

    `side` holds omnimodel.json's entries (`omnimodel_preset`, `omnimodel_sizes`; see read_side),
    named `side_source` in errors; without them the checkpoint has the released sizes.
    """
    side_source = side_source or source
    side = check_section(side_source, side or {}, _SIDE_FIELDS)
    sizes = _sizes(side_source, side["omnimodel_sizes"]) if "omnimodel_sizes" in side else None
    kind = layout(raw)
    if kind == "lerobot":
        top = check_section(source, raw, _LEROBOT_FIELDS)
        pi05 = LEROBOT_TYPES[top["type"]]
        if sizes:
            vision, llm, expert, vocab = sizes
        else:
            vision = SiglipConfig()
            llm = _variant(source, "paligemma_variant", top.get("paligemma_variant", "gemma_2b"))
            expert = _variant(source, "action_expert_variant", top.get("action_expert_variant", "gemma_300m"))
            vocab = 257_152
        image = _image_size(source, raw)
        if image % vision.patch:
            raise fail(
                source, "image_resolution", [image, image], f"a multiple of the patch size {vision.patch}"
            )
        if image != vision.image:
            raise fail(
                source, "image_resolution", [image, image], f"{vision.image} (the learned position table)"
            )
        state_mode, _ = norm_modes(source, raw, pi05)
        cameras = len(visual_features(source, raw)) + top.get("empty_cameras", 0)
        return PiConfig(
            pi05=pi05,
            vision=vision,
            llm=llm,
            expert=expert,
            vocab=vocab,
            action_dim=top.get("max_action_dim", 32),
            state_dim=top.get("max_state_dim", 32),
            chunk=top.get("chunk_size", 50),
            max_token_len=top.get("tokenizer_max_length", 200 if pi05 else 48),
            num_cameras=cameras or 3,
            num_steps=top.get("num_inference_steps", 10),
            min_period=float(top.get("min_period", 4e-3)),
            max_period=float(top.get("max_period", 4.0)),
            norm_mode="quantile" if state_mode == "quantile" else "mean_std",
            discrete_state_input=pi05,
            name=side.get("omnimodel_preset", top["type"]),
        )
    if kind == "openpi":
        if pi05 is None:
            raise ConfigError(
                f"{source}: an openpi config.json does not say π0 or π0.5; read it through the checkpoint directory"
            )
        top = check_section(source, raw, _OPENPI_FIELDS)
        if sizes:
            vision, llm, expert, vocab = sizes
        else:
            vision, vocab = SiglipConfig(), 257_152
            llm = _variant(source, "paligemma_variant", top["paligemma_variant"])
            expert = _variant(source, "action_expert_variant", top["action_expert_variant"])
        return PiConfig(
            pi05=pi05,
            vision=vision,
            llm=llm,
            expert=expert,
            vocab=vocab,
            action_dim=top["action_dim"],
            state_dim=top["action_dim"],
            chunk=top["action_horizon"],
            max_token_len=top.get("max_token_len", 200 if pi05 else 48),
            num_cameras=3,
            norm_mode="quantile" if pi05 else "mean_std",
            # openpi's pi05_libero trains with discrete_state_input=False; its config.json does not say
            discrete_state_input=top.get("discrete_state_input", False),
            name=side.get("omnimodel_preset", "pi05" if pi05 else "pi0"),
        )
    raise ConfigError(
        f"{source}: neither a LeRobot (type pi0/pi05) nor an openpi π config.json; fix config.json or re-download"
    )


def read_raw_config(ckpt: Path) -> dict:
    from omnimodel.archs import read_config_json

    return read_config_json(ckpt)


def read_side(ckpt: Path, raw: dict) -> tuple[dict, str]:
    """omnimodel.json's entries (every key and type checked) and the file to name in errors.

    Without the file: the `omnimodel_*` keys of config.json `raw` (checkpoints written before the
    side file kept them there), else none (the released sizes).
    """
    path = Path(ckpt) / SIDE_FILE
    if not path.is_file():
        return {k: raw[k] for k in SIDE_KEYS if k in raw}, str(Path(ckpt) / "config.json")
    try:
        side = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); fix it or re-make the checkpoint") from None
    source = str(path)
    if not isinstance(side, dict):
        raise CheckpointError(f"{path}: not a JSON object; it maps {' / '.join(SIDE_KEYS)} to values")
    check_section(source, side, _SIDE_FIELDS, closed=True)
    return side, source


def read_config(ckpt: Path) -> PiConfig:
    """Parse a checkpoint's config.json and omnimodel.json (and, for openpi, tell π0 from π0.5 by the weights)."""
    ckpt = Path(ckpt)
    raw = read_raw_config(ckpt)
    source = str(ckpt / "config.json")
    pi05 = is_pi05(ckpt, raw) if layout(raw) == "openpi" else None
    side, side_source = read_side(ckpt, raw)
    return config_from_json(raw, source, pi05, side, side_source)


# ----------------------------------------------------------------------------- weights


_TOWER = "paligemma_with_expert.paligemma.model.vision_tower."


def canonical_key(key: str) -> str:
    """A release key in our (openpi PI0Pytorch) spelling: no `model.` prefix, transformers 4.53-5.5 layout.

    Older transformers nest the PaliGemma parts differently (`paligemma.vision_tower`,
    `paligemma.language_model.model`); transformers >= 5.6 drops SigLIP's `vision_model` level.
    """
    key = key.removeprefix("model.")
    for old, new in _OLD_PREFIXES:
        if key.startswith(old):
            key = new + key[len(old) :]
            break
    if key.startswith(_TOWER) and not key.startswith(_TOWER + "vision_model."):
        key = _TOWER + "vision_model." + key[len(_TOWER) :]
    return key


def read_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    """model.safetensors in our names (memory-mapped): prefixes normalised, the text table resolved.

    The text table comes from `paligemma.lm_head.weight` when `embed_tokens` is absent or differs
    (pitfall 20); dead LM heads and legacy normaliser buffers are dropped.
    """
    path = Path(ckpt) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a π0/π0.5 checkpoint keeps its weights in {WEIGHTS}")
    state: dict[str, torch.Tensor] = {}
    for key, tensor in open_safetensors(path).items():
        if _LEGACY_STATS.match(key):
            continue
        name = canonical_key(key)
        if name in state:
            raise CheckpointError(
                f"{path}: {key} and another tensor both map to {name}; the file mixes two layouts"
            )
        state[name] = tensor
    head = state.pop(LM_HEAD, None)
    state.pop(EXPERT_LM_HEAD, None)
    if head is not None and (
        EMBED not in state or state[EMBED].shape != head.shape or not torch.equal(state[EMBED], head)
    ):
        state[EMBED] = head
    if EMBED not in state:
        raise CheckpointError(
            f"{path}: the text embedding is missing (neither {EMBED} nor {LM_HEAD}); re-download the checkpoint"
        )
    return state


def check_family(path: Path, names: list[str], pi05: bool) -> None:
    """π0 tensors under a π0.5 config (or the reverse) are a one-line error naming the file."""
    found = weights_say_pi05(names)
    if found is not None and found != pi05:
        want, got = ("π0.5", "π0") if pi05 else ("π0", "π0.5")
        example = next(
            n
            for n in names
            if n.removeprefix("model.").startswith(_PI0_ONLY if found is False else _PI05_ONLY)
            or _ADARMS.search(n)
        )
        raise CheckpointError(
            f"{path}: holds {got} tensors ({example}) but config.json says {want}; use the matching config.json or checkpoint"
        )


def load_model(ckpt: Path, dtype: torch.dtype = torch.float32) -> PI0:
    """Build the model from config.json and load every tensor, checking names and shapes first."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: checkpoint directory not found")
    cfg = read_config(ckpt)
    check_family(ckpt / WEIGHTS, weight_names(ckpt), cfg.pi05)
    state = read_state_dict(ckpt)
    with torch.device("meta"):
        model = PI0(cfg)
    check_tensors(
        ckpt / WEIGHTS, model.state_dict(), state, "the config",
        f"sizes other than the released ones belong in {SIDE_FILE}'s omnimodel_sizes",
    )  # fmt: skip
    # copies: aligned memory (bit-identical results to a model built in memory), no mmap kept open
    model.load_state_dict({k: v.to(dtype=dtype, copy=True) for k, v in state.items()}, assign=True)
    return model.eval()


# ----------------------------------------------------------------------------- statistics

STAT_NAMES = ("mean", "std", "q01", "q99", "q10", "q90", "min", "max")


@dataclass
class Stats:
    """Normalisation statistics of the robot state and actions (un-padded dims), and where they came from."""

    state: dict[str, np.ndarray] = field(default_factory=dict)
    action: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict:
        """{"state": {stat: [floats]}, "action": {...}} (empty when there are none)."""
        out = {}
        for part in ("state", "action"):
            d = getattr(self, part)
            if d:
                out[part] = {k: [float(x) for x in v] for k, v in d.items()}
        return out


def _stats_block(source: str, name: str, raw: object) -> dict[str, np.ndarray]:
    raw = require_mapping(source, name, raw)
    out = {}
    for k, v in raw.items():
        if k not in STAT_NAMES:
            continue
        values = require_list(source, f"{name}.{k}", v)
        if not values or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
            raise fail(source, f"{name}.{k}", values, "a non-empty list of numbers")
        out[k] = np.asarray(values, dtype=np.float64)
    return out


def read_openpi_stats(ckpt: Path, asset_id: str | None = None) -> Stats:
    """assets/<asset_id>/norm_stats.json ({"norm_stats": {"state": ..., "actions": ...}})."""
    files = sorted((Path(ckpt) / "assets").glob("**/norm_stats.json"))
    if asset_id is not None:
        files = [f for f in files if f.parent.relative_to(Path(ckpt) / "assets").as_posix() == asset_id]
    if not files:
        raise CheckpointError(
            f"{Path(ckpt) / 'assets'}: no norm_stats.json; copy the assets/ folder of the training run"
        )
    if len(files) > 1:
        ids = ", ".join(f.parent.relative_to(Path(ckpt) / "assets").as_posix() for f in files)
        raise CheckpointError(f"{Path(ckpt) / 'assets'}: several norm_stats.json ({ids}); pass asset_id")
    path = files[0]
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    source = str(path)
    stats = require_mapping(source, "norm_stats", require_mapping(source, "", raw).get("norm_stats"))
    return Stats(
        state=_stats_block(source, "norm_stats.state", stats["state"]) if "state" in stats else {},
        action=_stats_block(source, "norm_stats.actions", stats.get("actions")),
        source=source,
    )


def _pipeline_stats(
    ckpt: Path, config_name: str, registry_name: str
) -> tuple[dict[str, np.ndarray], str] | None:
    """The flat "<feature>.<stat>" tensors of a LeRobot pipeline's (un)normalizer step; None if no such step."""
    cfg_path = Path(ckpt) / config_name
    if not cfg_path.is_file():
        return None
    try:
        raw = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from None
    source = str(cfg_path)
    steps = require_list(source, "steps", require_mapping(source, "", raw).get("steps"))
    for i, step in enumerate(steps):
        step = require_mapping(source, f"steps[{i}]", step)
        if step.get("registry_name") != registry_name or "state_file" not in step:
            continue
        name = step["state_file"]
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise fail(source, f"steps[{i}].state_file", name, "a file name inside the checkpoint directory")
        path = Path(ckpt) / name
        if not path.is_file():
            raise CheckpointError(
                f"{path}: missing; {config_name} names it as the {registry_name} statistics, re-download it"
            )
        return {k: t.double().numpy().reshape(-1) for k, t in open_safetensors(path).items()}, str(path)
    return None


def read_lerobot_stats(ckpt: Path) -> Stats:
    """Normaliser statistics from the processor state files, else the legacy buffers in model.safetensors."""
    ckpt = Path(ckpt)
    stats = Stats()
    for config_name, registry in (
        (PREPROCESSOR, "normalizer_processor"),
        (POSTPROCESSOR, "unnormalizer_processor"),
    ):
        found = _pipeline_stats(ckpt, config_name, registry)
        if found is None:
            continue
        flat, source = found
        for key, value in flat.items():
            feature, _, stat = key.rpartition(".")
            if feature == "observation.state" and stat in STAT_NAMES:
                stats.state.setdefault(stat, value)
            elif feature == "action" and stat in STAT_NAMES:
                stats.action.setdefault(stat, value)
        stats.source = stats.source or source
    if stats.action:
        return stats
    for key, tensor in open_safetensors(ckpt / WEIGHTS).items():
        m = _LEGACY_STATS.match(key)
        if not m:
            continue
        owner, feature, stat = m.groups()
        value = tensor.double().numpy().reshape(-1)
        if feature == "observation_state" and owner == "normalize_inputs":
            stats.state[stat] = value
        elif feature == "action" and owner in ("unnormalize_outputs", "normalize_targets"):
            stats.action.setdefault(stat, value)
        stats.source = str(ckpt / WEIGHTS)
    return stats


def read_stats(ckpt: Path) -> Stats:
    """The checkpoint's statistics in either layout (empty Stats when it carries none)."""
    raw = read_raw_config(ckpt)
    if layout(raw) == "openpi":
        if not (Path(ckpt) / "assets").is_dir():
            return Stats()
        return read_openpi_stats(ckpt)
    return read_lerobot_stats(ckpt)


# ----------------------------------------------------------------------------- writing (LeRobot layout)


def _feature(kind: str, shape: list[int]) -> dict:
    return {"type": kind, "shape": shape}


def config_to_json(
    cfg: PiConfig,
    state_dim: int = 8,
    action_dim: int = 7,
    image_keys: tuple[str, ...] = (),
) -> dict:
    """config.json for `cfg`: LeRobot's PI0Config / PI05Config fields only (see side_to_json for the rest)."""
    keys = image_keys or ("observation.images.image", "observation.images.image2")
    keys = keys[: cfg.num_cameras]
    res = [cfg.vision.image, cfg.vision.image]
    mode = "QUANTILES" if cfg.norm_mode == "quantile" else "MEAN_STD"
    variant_of = {v: k for k, v in VARIANTS.items()}
    return {
        "type": "pi05" if cfg.pi05 else "pi0",
        "n_obs_steps": 1,
        "input_features": {
            **{k: _feature("VISUAL", [3, *res]) for k in keys},
            "observation.state": _feature("STATE", [state_dim]),
        },
        "output_features": {"action": _feature("ACTION", [action_dim])},
        "device": "cpu",
        "use_amp": False,
        "use_peft": False,
        "push_to_hub": False,
        "repo_id": None,
        "private": None,
        "tags": None,
        "license": None,
        "pretrained_path": None,
        "pretrained_revision": None,
        "paligemma_variant": variant_of.get(cfg.llm, "gemma_2b"),
        "action_expert_variant": variant_of.get(cfg.expert, "gemma_300m"),
        "dtype": "float32",
        "chunk_size": cfg.chunk,
        "n_action_steps": cfg.chunk,
        "max_state_dim": cfg.state_dim,
        "max_action_dim": cfg.action_dim,
        "num_inference_steps": cfg.num_steps,
        "time_sampling_beta_alpha": 1.5,
        "time_sampling_beta_beta": 1.0,
        "time_sampling_scale": 0.999,
        "time_sampling_offset": 0.001,
        "min_period": cfg.min_period,
        "max_period": cfg.max_period,
        "use_relative_actions": False,
        "relative_exclude_joints": ["gripper"],
        "action_feature_names": None,
        "rtc_config": None,
        "image_resolution": res,
        "empty_cameras": cfg.num_cameras - len(keys),
        "tokenizer_max_length": cfg.max_token_len,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": mode, "ACTION": mode},
        "gradient_checkpointing": False,
        "compile_model": False,
        "compile_mode": "max-autotune",
        "freeze_vision_encoder": False,
        "train_expert_only": False,
        "optimizer_lr": 2.5e-05,
        "optimizer_betas": [0.9, 0.95],
        "optimizer_eps": 1e-08,
        "optimizer_weight_decay": 0.01,
        "optimizer_grad_clip_norm": 1.0,
        "scheduler_warmup_steps": 1000,
        "scheduler_decay_steps": 30000,
        "scheduler_decay_lr": 2.5e-06,
    }


def released_sizes(cfg: PiConfig) -> bool:
    """True when LeRobot's variant names and fixed vision/vocab sizes say all of `cfg`'s sizes."""
    return (
        cfg.vision == SiglipConfig()
        and cfg.llm in VARIANTS.values()
        and cfg.expert in VARIANTS.values()
        and cfg.vocab == 257_152
    )


def side_to_json(cfg: PiConfig, sizes: bool = False) -> dict:
    """omnimodel.json for `cfg`: the preset name and, unless they are the released ones, every size.

    `sizes` writes `omnimodel_sizes` even for the released sizes (for editing them).
    """
    out: dict = {"omnimodel_preset": cfg.name}
    if sizes or not released_sizes(cfg):
        out["omnimodel_sizes"] = {
            "vision": {
                k: getattr(cfg.vision, k) for k in ("width", "depth", "heads", "mlp", "patch", "image")
            },
            "llm": {
                k: getattr(cfg.llm, k) for k in ("width", "depth", "mlp", "heads", "kv_heads", "head_dim")
            },
            "expert": {
                k: getattr(cfg.expert, k) for k in ("width", "depth", "mlp", "heads", "kv_heads", "head_dim")
            },
            "vocab_size": cfg.vocab,
        }
    return out


def _normalizer_config(features: dict, norm: dict) -> dict:
    return {"eps": 1e-8, "features": features, "norm_map": norm}


def processor_configs(raw_config: dict) -> tuple[dict, dict, int, int]:
    """policy_preprocessor.json and policy_postprocessor.json as LeRobot's make_pi0(5)_pre_post_processors save them.

    Returns both configs and the indices of the normalizer / unnormalizer steps.
    """
    pi05 = raw_config["type"] == "pi05"
    feats = {**raw_config["input_features"], **raw_config["output_features"]}
    norm = raw_config["normalization_mapping"]
    tokenizer = {
        "registry_name": "tokenizer_processor",
        "config": {
            "max_length": raw_config["tokenizer_max_length"],
            "task_key": "task",
            "padding_side": "right",
            "padding": "max_length",
            "truncation": True,
            "tokenizer_name": "google/paligemma-3b-pt-224",
        },
    }
    relative = {
        "registry_name": "relative_actions_processor",
        "config": {"enabled": False, "exclude_joints": ["gripper"], "action_names": None},
    }
    normalizer = {"registry_name": "normalizer_processor", "config": _normalizer_config(feats, norm)}
    head = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
    ]
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    if pi05:
        state_step = {
            "registry_name": "pi05_prepare_state_tokenizer_processor_step",
            "config": {},
        }
        steps = [*head, relative, normalizer, state_step, tokenizer, device]
    else:
        steps = [
            *head,
            {"registry_name": "pi0_new_line_processor", "config": {}},
            tokenizer,
            device,
            relative,
            normalizer,
        ]
    norm_index = steps.index(normalizer)
    normalizer["state_file"] = f"policy_preprocessor_step_{norm_index}_normalizer_processor.safetensors"
    post = {
        "name": "policy_postprocessor",
        "steps": [
            {
                "registry_name": "unnormalizer_processor",
                "config": _normalizer_config(dict(raw_config["output_features"]), norm),
                "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
            },
            {"registry_name": "absolute_actions_processor", "config": {"enabled": False}},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }
    return {"name": "policy_preprocessor", "steps": steps}, post, norm_index, 0


def write_checkpoint(
    model: PI0, out: Path, stats: Stats, tokenizer_writer, weight_dtype: torch.dtype = torch.float32
) -> None:
    """Write config.json, omnimodel.json, model.safetensors (`model.` keys), processor configs + stats, tokenizer into `out`."""
    cfg = model.cfg
    raw = config_to_json(cfg, len(stats.state["mean"]), len(stats.action["mean"]))
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    (out / SIDE_FILE).write_text(json.dumps(side_to_json(cfg), indent=2))
    pre, post, norm_index, _ = processor_configs(raw)
    (out / PREPROCESSOR).write_text(json.dumps(pre, indent=2))
    (out / POSTPROCESSOR).write_text(json.dumps(post, indent=2))

    def flat(parts: dict[str, dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return {
            f"{feat}.{k}": torch.tensor(v, dtype=torch.float32)
            for feat, d in parts.items()
            for k, v in d.items()
        }

    save_file(
        flat({"observation.state": stats.state, "action": stats.action}),
        str(out / pre["steps"][norm_index]["state_file"]),
    )
    save_file(flat({"action": stats.action}), str(out / post["steps"][0]["state_file"]))
    tensors = {"model." + k: t.detach().to(weight_dtype).contiguous() for k, t in model.state_dict().items()}
    # LeRobot 0.6.1 stores the tied table twice (its loader copies lm_head over embed_tokens)
    tensors["model." + LM_HEAD] = tensors["model." + EMBED].clone()
    # the unused expert LM head, so LeRobot's strict load finds every key it builds
    tensors["model." + EXPERT_LM_HEAD] = torch.zeros(cfg.vocab, cfg.expert.width, dtype=weight_dtype)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    tokenizer_writer(out)


def write_openpi_checkpoint(
    model: PI0, out: Path, stats: Stats, asset_id: str = "physical-intelligence/libero", sizes: bool = True
) -> None:
    """Write the openpi PyTorch layout into `out`: the converter's config.json, unprefixed keys, assets/.

    With `sizes`, omnimodel.json beside it carries `omnimodel_sizes` (needed for sizes openpi cannot name).
    """
    cfg = model.cfg
    variant_of = {v: k for k, v in VARIANTS.items()}
    raw = {
        "action_dim": cfg.action_dim,
        "action_horizon": cfg.chunk,
        "paligemma_variant": variant_of.get(cfg.llm, "gemma_2b"),
        "action_expert_variant": variant_of.get(cfg.expert, "gemma_300m"),
        "precision": "float32",
    }
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    extra = side_to_json(cfg).get("omnimodel_sizes")
    if sizes and extra:
        (out / SIDE_FILE).write_text(json.dumps({"omnimodel_sizes": extra}, indent=2))
    tensors = {k: t.detach().contiguous() for k, t in model.state_dict().items()}
    tensors[EXPERT_LM_HEAD] = torch.zeros(cfg.vocab, cfg.expert.width)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    assets = out / "assets" / asset_id
    assets.mkdir(parents=True)
    norm = {"norm_stats": {"state": stats.to_dict()["state"], "actions": stats.to_dict()["action"]}}
    (assets / "norm_stats.json").write_text(json.dumps(norm, indent=2))
