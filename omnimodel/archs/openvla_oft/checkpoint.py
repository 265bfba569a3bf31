"""Read and write OpenVLA-OFT checkpoints in the exact layout of the released Hugging Face repos."""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import save_file

from omnimodel.archs.openvla_oft.model import KNOWN_TOWERS, OpenVLAOFT, OpenVLAOFTConfig, TowerConfig
from omnimodel.archs.validate import (
    MAX_HEADS,
    MAX_IMAGE,
    MAX_LAYERS,
    MAX_POSITIONS,
    MAX_VOCAB,
    MAX_WIDTH,
    Field,
    check_count_matches,
    check_divides,
    check_section,
    check_tensors,
    fail,
    require_list,
    require_mapping,
)
from omnimodel.errors import CheckpointError, ConfigError
from omnimodel.models.safetensors_mmap import open_safetensors, read_safetensors_header

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
STATS_FILE = "dataset_statistics.json"
# LlamaConfig defaults as transformers 4.40.1 had them: the released text_config omits these.
_LLAMA_DEFAULTS = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "vocab_size": 32000,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
}
_TEXT_FIELDS = {
    "hidden_size": "hidden",
    "intermediate_size": "mlp",
    "num_hidden_layers": "layers",
    "num_attention_heads": "heads",
    "num_key_value_heads": "kv_heads",
    "vocab_size": "vocab",
    "rms_norm_eps": "rms_eps",
    "rope_theta": "rope_theta",
    "max_position_embeddings": "max_positions",
}


def config_to_json(cfg: OpenVLAOFTConfig) -> dict:
    """config.json as OpenVLAConfig writes it; our own tower sizes go under `omnimodel_towers`."""
    text = {"model_type": "llama", "pad_token_id": cfg.pad_token_id, "torch_dtype": "bfloat16"}
    for hf, ours in _TEXT_FIELDS.items():
        default = _LLAMA_DEFAULTS[hf]
        value = getattr(cfg, ours)
        if hf == "num_key_value_heads" and value == cfg.heads:
            continue
        if value != default:
            text[hf] = value
    out = {
        "model_type": "openvla",
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {
            "AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
        },
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [cfg.dino.image, cfg.siglip.image],
        "timm_model_ids": [cfg.dino.timm_id, cfg.siglip.timm_id],
        "timm_override_act_layers": [None, None],
        "llm_max_length": cfg.max_positions,
        "pad_token_id": cfg.pad_token_id,
        "pad_to_multiple_of": 64,
        "output_projector_states": False,
        "n_action_bins": 256,
        "norm_stats": {},
        "text_config": text,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
    }
    if any(
        KNOWN_TOWERS.get(t.timm_id) != t for t in (cfg.dino, cfg.siglip)
    ):  # sizes a timm id does not imply
        out["omnimodel_towers"] = [vars(cfg.dino), vars(cfg.siglip)]
    out["omnimodel_preset"] = cfg.name
    return out


_TOWER_FIELDS = (
    Field("timm_id", str),
    Field("width", int, 1, MAX_WIDTH),
    Field("depth", int, 1, MAX_LAYERS),
    Field("heads", int, 1, MAX_HEADS),
    Field("mlp", int, 1, 8 * MAX_WIDTH),
    Field("patch", int, 1, MAX_IMAGE, optional=True),
    Field("image", int, 1, MAX_IMAGE, optional=True),
    Field("n_registers", int, 0, 1024, optional=True),
    Field("class_token", bool, optional=True),
    Field("layer_scale", bool, optional=True),
    Field("attn_pool", bool, optional=True),
    Field("ln_eps", float, 1e-12, 1.0, optional=True),
)
_TEXT_CHECKS = (
    Field("hidden_size", int, 1, MAX_WIDTH),
    Field("intermediate_size", int, 1, 8 * MAX_WIDTH),
    Field("num_hidden_layers", int, 1, MAX_LAYERS),
    Field("num_attention_heads", int, 1, MAX_HEADS),
    Field("num_key_value_heads", int, 1, MAX_HEADS, optional=True, nullable=True),
    Field("vocab_size", int, 1, MAX_VOCAB),
    Field("rms_norm_eps", float, 1e-12, 1.0),
    Field("rope_theta", float, 1.0, 1e12),
    Field("max_position_embeddings", int, 1, MAX_POSITIONS),
    Field("pad_token_id", int, 0, MAX_VOCAB, optional=True),
)
_TOP_CHECKS = (
    Field("pad_to_multiple_of", int, 1, 1 << 16, optional=True),
    Field("pad_token_id", int, 0, MAX_VOCAB, optional=True),
    Field("omnimodel_preset", str, optional=True),
)


def editable_config_json(cfg: OpenVLAOFTConfig) -> dict:
    """config.json with every size spelled out (towers and LLaMA defaults too): what `zoo make --set` edits."""
    out = config_to_json(cfg)
    out["omnimodel_towers"] = [dict(vars(cfg.dino)), dict(vars(cfg.siglip))]
    out["text_config"].update({hf: getattr(cfg, ours) for hf, ours in _TEXT_FIELDS.items()})
    return out


def _tower_from_json(source: str, key: str, raw: object) -> TowerConfig:
    """One `omnimodel_towers` entry: only TowerConfig's keys, each of the right type and range."""
    t = check_section(source, require_mapping(source, key, raw), _TOWER_FIELDS, prefix=f"{key}.", closed=True)
    tower = TowerConfig(**t)
    check_divides(source, f"{key}.width", tower.width, f"{key}.heads", tower.heads)
    if tower.patch > tower.image:
        raise fail(source, f"{key}.patch", tower.patch, f"a patch size <= {key}.image = {tower.image}")
    return tower


def _towers_from_json(d: dict, source: str) -> tuple[TowerConfig, TowerConfig]:
    """The DINOv2 and SigLIP towers: our own sizes under `omnimodel_towers`, else the known timm ids."""
    if "omnimodel_towers" in d:
        raw = require_list(source, "omnimodel_towers", d["omnimodel_towers"], 2)
        return tuple(_tower_from_json(source, f"omnimodel_towers[{i}]", t) for i, t in enumerate(raw))
    if "timm_model_ids" not in d:
        raise ConfigError(
            f"{source}: timm_model_ids missing; expected the two timm ids of a dinosiglip backbone"
        )
    ids = require_list(source, "timm_model_ids", d["timm_model_ids"], 2)
    for i, tid in enumerate(ids):
        if not isinstance(tid, str) or tid not in KNOWN_TOWERS:
            raise fail(source, f"timm_model_ids[{i}]", tid, f"one of {', '.join(KNOWN_TOWERS)}")
    return tuple(TowerConfig(**vars(KNOWN_TOWERS[i])) for i in ids)


_CUSTOM_FIELDS = (
    Field("file", str),
    Field("class", str),
    Field("kwargs", dict, optional=True, nullable=True),
)


def _check_custom_modules(d: dict, source: str) -> None:
    """`omnimodel_custom_modules`: module path -> {file, class, kwargs} (see docs/custom-modules.md)."""
    specs = require_mapping(source, "omnimodel_custom_modules", d.get("omnimodel_custom_modules") or {})
    for path, spec in specs.items():
        key = f"omnimodel_custom_modules.{path}"
        check_section(
            source, require_mapping(source, key, spec), _CUSTOM_FIELDS, prefix=f"{key}.", closed=True
        )
        if spec.get("kwargs") is not None:
            require_mapping(source, f"{key}.kwargs", spec["kwargs"])


def config_from_json(d: dict, source: str = "config.json") -> OpenVLAOFTConfig:
    """Map a released (or our) config.json onto OpenVLAOFTConfig, filling LlamaConfig defaults.

    Every field is checked (type, range, divisibility) first: a hostile or broken config.json
    gives one ConfigError line and no module is built.
    """
    d = require_mapping(source, "config.json", d)
    _check_custom_modules(d, source)
    dino, siglip = _towers_from_json(d, source)
    top = check_section(source, d, _TOP_CHECKS)
    text = {**_LLAMA_DEFAULTS, **require_mapping(source, "text_config", d.get("text_config", {}))}
    text.update(check_section(source, text, _TEXT_CHECKS, prefix="text_config."))
    kw = {ours: text[hf] for hf, ours in _TEXT_FIELDS.items()}
    if kw["kv_heads"] is None:
        kw["kv_heads"] = kw["heads"]
    check_divides(
        source, "text_config.hidden_size", kw["hidden"], "text_config.num_attention_heads", kw["heads"]
    )
    check_divides(
        source,
        "text_config.num_attention_heads",
        kw["heads"],
        "text_config.num_key_value_heads",
        kw["kv_heads"],
    )
    if (kw["hidden"] // kw["heads"]) % 2:
        raise fail(source, "text_config.hidden_size", kw["hidden"], "an even head size (RoPE rotates pairs)")
    vocab, pad_multiple = kw["vocab"], top.get("pad_to_multiple_of", 64)
    pad_id = top.get("pad_token_id", text.get("pad_token_id", 32000))
    if pad_id >= vocab:
        raise fail(source, "pad_token_id", pad_id, f"an id below text_config.vocab_size = {vocab}")
    return OpenVLAOFTConfig(
        dino,
        siglip,
        text_vocab=vocab - pad_multiple
        if vocab % pad_multiple == 0 and vocab - pad_multiple >= pad_id
        else pad_id,
        pad_token_id=pad_id,
        name=top.get("omnimodel_preset", "openvla-oft"),
        **kw,
    )


def _side_file(ckpt: Path, component: str) -> Path:
    """The one file holding `component` and 'checkpoint' in its name (as the OFT eval finds it)."""
    hits = sorted(p for p in ckpt.iterdir() if component in p.name and "checkpoint" in p.name)
    if not hits:
        raise CheckpointError(
            f"{ckpt}: no {component}--<step>_checkpoint.pt file; copy it from the released checkpoint"
        )
    if len(hits) > 1:
        raise CheckpointError(
            f"{ckpt}: several {component} files ({', '.join(p.name for p in hits)}); keep one"
        )
    return _confined(ckpt, hits[0].name, ckpt)


def _unpickler_reason(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what was refused, without its advice to disable the check."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [
        ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(boilerplate)
    ]
    return lines[0] if lines else "not a plain tensor file"


def _load_side_state(path: Path) -> dict[str, torch.Tensor]:
    """A side file's tensors through torch's weights-only unpickler (mmap for the zip format, in memory for the legacy one)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # torch warns about pickle protocols on stderr; the errors below say it all
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:  # a global or an opcode was refused: possibly a hostile file
        raise CheckpointError(
            f"{path}: refused by torch's weights-only loader ({_unpickler_reason(exc)}): not a plain tensor file, "
            "possibly hostile; never load it with weights_only=False, re-download it from a source you trust"
        ) from None
    except Exception as exc:  # torch raises several types for a truncated zip
        raise CheckpointError(
            f"{path}: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0]}); re-download it"
        ) from None
    named = isinstance(state, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    )
    if not named:
        raise CheckpointError(f"{path}: not a state dict of named tensors; re-download it")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_config(ckpt: Path) -> OpenVLAOFTConfig:
    """Parse a checkpoint's config.json."""
    from omnimodel.archs import read_config_json

    return config_from_json(read_config_json(ckpt), str(Path(ckpt) / "config.json"))


def _confined(ckpt: Path, name: object, source: Path) -> Path:
    """`ckpt / name` if it stays inside the checkpoint directory (symlinks resolved), else a CheckpointError.

    A Hugging Face cache snapshot links its files to the repo's `blobs/` two levels up; those
    links are allowed, any other target outside the directory is refused.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CheckpointError(f"{source}: shard name {name!r} is not a file name; re-download the checkpoint")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise CheckpointError(
            f"{source}: shard path {name!r} leaves the checkpoint directory; shards must sit next to the index"
        )
    path = ckpt / rel
    real, root = path.resolve(), ckpt.resolve()
    blobs = root.parent.parent / "blobs" if root.parent.name == "snapshots" else None
    if not (real.is_relative_to(root) or (blobs is not None and real.is_relative_to(blobs))):
        raise CheckpointError(
            f"{source}: {name} links to {real}, outside the checkpoint directory; copy the file in instead"
        )
    return path


def read_weight_map(ckpt: Path) -> dict[str, str] | None:
    """The shard index's tensor -> shard map (None for a single-file checkpoint), checked and confined."""
    index = Path(ckpt) / INDEX_FILE
    if not index.exists():
        return None
    try:
        raw = json.loads(index.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{index}: corrupt shard index ({exc}); re-download it") from None
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no weight_map object of tensor -> shard names; re-download it")
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not key:
            raise CheckpointError(
                f"{index}: weight_map[{key!r}] = {shard!r} is not a shard file name; re-download it"
            )
        _confined(Path(ckpt), shard, index)
    return weight_map


def tensor_names(ckpt: Path) -> list[str]:
    """Every tensor name of the main shards (from the index, or the single file's header), without mapping data."""
    ckpt = Path(ckpt)
    weight_map = read_weight_map(ckpt)
    if weight_map is not None:
        return list(weight_map)
    single = _confined(ckpt, SINGLE_FILE, ckpt)
    if not single.exists():
        raise CheckpointError(f"{ckpt}: neither {INDEX_FILE} nor {SINGLE_FILE}; not a checkpoint directory")
    return list(read_safetensors_header(single))


def _indices(names: list[str], prefix: str) -> int:
    """How many distinct block indices `prefix<N>.` the names hold."""
    found = set()
    for name in names:
        if name.startswith(prefix):
            head = name[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return len(found)


def check_layer_counts(cfg: OpenVLAOFTConfig, names: list[str], source: str) -> None:
    """The config's layer and tower depths must match the block indices in the checkpoint's tensor names."""
    for key, declared, prefix, what in (
        ("text_config.num_hidden_layers", cfg.layers, "language_model.model.layers.", "LLaMA layers"),
        ("DINOv2 depth", cfg.dino.depth, "vision_backbone.featurizer.blocks.", "DINOv2 blocks"),
        ("SigLIP depth", cfg.siglip.depth, "vision_backbone.fused_featurizer.blocks.", "SigLIP blocks"),
    ):
        check_count_matches(source, key, declared, _indices(names, prefix), what)


def read_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint (shards memory-mapped) with `action_head.`/`proprio_projector.` side files."""
    ckpt = Path(ckpt)
    weight_map = read_weight_map(ckpt)
    if weight_map is not None:
        shards = sorted(set(weight_map.values()))
    elif (ckpt / SINGLE_FILE).exists():
        shards = [SINGLE_FILE]
    else:
        raise CheckpointError(f"{ckpt}: neither {INDEX_FILE} nor {SINGLE_FILE}; not a checkpoint directory")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors = open_safetensors(_confined(ckpt, shard, ckpt / (INDEX_FILE if weight_map else SINGLE_FILE)))
        if weight_map is not None:
            missing = [k for k, f in weight_map.items() if f == shard and k not in tensors]
            if missing:
                raise CheckpointError(
                    f"{ckpt / shard}: lacks {missing[0]} listed in {INDEX_FILE}; re-download the shard"
                )
        state.update(tensors)
    for component in ("action_head", "proprio_projector"):
        for k, v in _load_side_state(_side_file(ckpt, component)).items():
            state[f"{component}.{k}"] = v
    return state


def load_model(ckpt: Path, dtype: torch.dtype = torch.float32) -> OpenVLAOFT:
    """Build the model from config.json and load every tensor, checking names and shapes."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: checkpoint directory not found")
    cfg = read_config(ckpt)
    check_layer_counts(cfg, tensor_names(ckpt), str(ckpt / "config.json"))
    state = read_state_dict(ckpt)
    with torch.device("meta"):
        model = OpenVLAOFT(cfg)
        from omnimodel.models.custom import install_custom_modules

        install_custom_modules(model, ckpt)  # modules of a new class declared in config.json
    check_tensors(ckpt, dict(model.state_dict()), state)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    # Non-persistent buffers (RoPE inverse frequencies) are not in the checkpoint: rebuild them.
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    model.language_model.model.rotary_emb = LlamaRotaryEmbedding(model.language_model.config)
    stale = [n for n, b in model.named_buffers() if b.is_meta]
    if stale:
        raise CheckpointError(f"internal: buffers {stale} were not materialised")
    return model.eval()


def write_checkpoint(
    model: OpenVLAOFT,
    out: Path,
    stats: dict,
    tokenizer_writer,
    max_shard_bytes: int = 4_000_000_000,
    step: str = "latest",
) -> None:
    """Write model + side files + statistics in the released layout into an existing directory `out`."""
    cfg = model.cfg
    (out / "config.json").write_text(json.dumps(config_to_json(cfg), indent=2))
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": cfg.pad_token_id,
                "transformers_version": "4.40.1",
            },
            indent=2,
        )
    )
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "PrismaticImageProcessor",
                "image_resize_strategy": "resize-naive",
                "input_sizes": [[3, cfg.dino.image, cfg.dino.image], [3, cfg.siglip.image, cfg.siglip.image]],
                "interpolations": ["bicubic", "bicubic"],
                "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
                "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
                "tvf_crop_params": [{"output_size": [224, 224]}, {"output_size": [224, 224]}],
                "tvf_normalize_params": [
                    {
                        "mean": [0.484375, 0.455078125, 0.40625],
                        "std": [0.228515625, 0.2236328125, 0.224609375],
                        "inplace": False,
                    },
                    {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "inplace": False},
                ],
                "tvf_resize_params": [{"size": [224, 224], "interpolation": 3, "antialias": True}] * 2,
                "use_fused_vision_backbone": True,
            },
            indent=2,
        )
    )
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2))
    tokenizer_writer(out)
    main = {
        k: v.detach().to(torch.bfloat16).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith(("action_head.", "proprio_projector."))
    }
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in main.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out / SINGLE_FILE), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in main.values())
        (out / INDEX_FILE).write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    head = OrderedDict(
        (f"module.{k}", v.detach().to(torch.bfloat16).clone())
        for k, v in model.action_head.state_dict().items()
    )
    torch.save(head, out / f"action_head--{step}_checkpoint.pt")
    proprio = OrderedDict(
        (f"module.{k}", v.detach().float().clone()) for k, v in model.proprio_projector.state_dict().items()
    )
    torch.save(proprio, out / f"proprio_projector--{step}_checkpoint.pt")
