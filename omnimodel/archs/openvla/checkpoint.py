"""Read and write OpenVLA checkpoints in the layout of the released `openvla/openvla-7b` repo.

config.json (model_type "openvla", `norm_stats` inside it), sharded safetensors with
model.safetensors.index.json (or one model.safetensors), tokenizer files; no side files. The
config.json fields and the shard index are the same as OpenVLA-OFT's, so their readers and
checks are OFT's (archs/openvla_oft/checkpoint.py); only the model built and the files differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from omnimodel.archs.openvla.model import OpenVLA, OpenVLAConfig
from omnimodel.archs.openvla_oft import checkpoint as oft
from omnimodel.archs.validate import Field, check_section, check_tensors, fail, require_list, require_mapping
from omnimodel.errors import CheckpointError
from omnimodel.models.safetensors_mmap import open_safetensors

INDEX_FILE = oft.INDEX_FILE
SINGLE_FILE = oft.SINGLE_FILE
_TOP_CHECKS = (
    Field("pad_to_multiple_of", int, 1, 1 << 16, optional=True),
    Field("n_action_bins", int, 2, 1 << 16, optional=True),
)


def config_to_json(cfg: OpenVLAConfig, norm_stats: dict | None = None) -> dict:
    """config.json as the released OpenVLAConfig writes it, with `norm_stats` inside."""
    out = oft.config_to_json(cfg)  # the same Prismatic config fields; only the values below differ
    out["pad_to_multiple_of"] = cfg.pad_to_multiple_of
    out["n_action_bins"] = cfg.n_action_bins
    out["norm_stats"] = norm_stats or {}
    return out


def _check_norm_stats(raw: object, action_dim: int, source: str) -> dict:
    """norm_stats: dataset -> {"action": {"q01", "q99", optional "mask"}} with action_dim entries each."""
    stats = require_mapping(source, "norm_stats", raw)
    for name, entry in stats.items():
        action = require_mapping(
            source,
            f"norm_stats.{name}.action",
            require_mapping(source, f"norm_stats.{name}", entry).get("action"),
        )
        for field in ("q01", "q99", "mask"):
            if field == "mask" and field not in action:
                continue
            values = require_list(source, f"norm_stats.{name}.action.{field}", action.get(field), action_dim)
            kind = bool if field == "mask" else (int, float)
            if not all(isinstance(v, kind) for v in values):
                raise fail(
                    source,
                    f"norm_stats.{name}.action.{field}",
                    values,
                    f"{action_dim} {'booleans' if field == 'mask' else 'numbers'}",
                )
    return stats


def config_from_json(d: dict, source: str = "config.json") -> OpenVLAConfig:
    """Map a released (or our) config.json onto OpenVLAConfig; every field checked first (one ConfigError line)."""
    base = oft.config_from_json(d, source)  # towers, text_config, pad id: the same fields and checks
    top = check_section(source, d, _TOP_CHECKS)
    cfg = OpenVLAConfig(
        base.dino,
        base.siglip,
        hidden=base.hidden,
        layers=base.layers,
        heads=base.heads,
        kv_heads=base.kv_heads,
        mlp=base.mlp,
        vocab=base.vocab,
        pad_to_multiple_of=top.get("pad_to_multiple_of", 64),
        rms_eps=base.rms_eps,
        rope_theta=base.rope_theta,
        max_positions=base.max_positions,
        pad_token_id=base.pad_token_id,
        n_action_bins=top.get("n_action_bins", 256),
        name=d.get("omnimodel_preset", "openvla"),
    )
    if cfg.text_vocab < cfg.n_action_bins:
        raise fail(
            source,
            "text_config.vocab_size",
            cfg.vocab,
            f"more than pad_to_multiple_of + n_action_bins = {cfg.pad_to_multiple_of + cfg.n_action_bins}",
        )
    _check_norm_stats(
        d.get("norm_stats", {}), cfg.action_dim, source
    )  # with the rest, so `port` refuses it up front
    return cfg


def read_config(ckpt: Path) -> OpenVLAConfig:
    """Parse a checkpoint's config.json."""
    from omnimodel.archs import read_config_json

    return config_from_json(read_config_json(ckpt), str(Path(ckpt) / "config.json"))


def read_norm_stats(ckpt: Path) -> dict:
    """config.json's `norm_stats` (dataset -> statistics), checked."""
    from omnimodel.archs import read_config_json

    raw = read_config_json(ckpt)
    cfg = config_from_json(raw, str(Path(ckpt) / "config.json"))
    return _check_norm_stats(raw.get("norm_stats", {}), cfg.action_dim, str(Path(ckpt) / "config.json"))


def read_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    """All tensors of the shards (memory-mapped), each shard checked against the index."""
    ckpt = Path(ckpt)
    weight_map = oft.read_weight_map(ckpt)
    if weight_map is not None:
        shards, source = sorted(set(weight_map.values())), ckpt / INDEX_FILE
    elif (ckpt / SINGLE_FILE).exists():
        shards, source = [SINGLE_FILE], ckpt / SINGLE_FILE
    else:
        raise CheckpointError(f"{ckpt}: neither {INDEX_FILE} nor {SINGLE_FILE}; not a checkpoint directory")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors = open_safetensors(oft._confined(ckpt, shard, source))
        missing = [k for k, f in (weight_map or {}).items() if f == shard and k not in tensors]
        if missing:
            raise CheckpointError(
                f"{ckpt / shard}: lacks {missing[0]} listed in {INDEX_FILE}; re-download the shard"
            )
        state.update(tensors)
    return state


def load_model(ckpt: Path, dtype: torch.dtype = torch.float32) -> OpenVLA:
    """Build the model from config.json and load every tensor, checking names and shapes."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: checkpoint directory not found")
    cfg = read_config(ckpt)
    oft.check_layer_counts(cfg, oft.tensor_names(ckpt), str(ckpt / "config.json"))
    state = read_state_dict(ckpt)
    with torch.device("meta"):
        model = OpenVLA(cfg)
    check_tensors(ckpt, dict(model.state_dict()), state)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    # RoPE inverse frequencies are a non-persistent buffer, not in the checkpoint: rebuild them.
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    model.language_model.model.rotary_emb = LlamaRotaryEmbedding(model.language_model.config)
    return model.eval()


def write_checkpoint(
    model: OpenVLA, out: Path, norm_stats: dict, tokenizer_writer, max_shard_bytes: int = 4_000_000_000
) -> None:
    """Write model, config (norm_stats inside), generation config and tokenizer into the existing directory `out`."""
    cfg = model.cfg
    (out / "config.json").write_text(json.dumps(config_to_json(cfg, norm_stats), indent=2))
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
    tokenizer_writer(out)
    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out / SINGLE_FILE), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / INDEX_FILE).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
