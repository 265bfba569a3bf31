"""Checkpoint -> GGUF: name mapping, explicit per-tensor transforms, quantizer plan, encoding, writing.

Transforms are data: `transforms[gguf_name]` lists what is applied before encoding, in order:
`"transpose"` (2-D transpose) and `"permute_rope"` (llama.cpp's row permutation of q/k for GGML's
interleaved RoPE; head count from the config). Fused qkv is split by the name map itself.
`default_transforms(config)` gives the LLaMA defaults; the reflector may override entries.

Type fallback: when the planned type's block does not divide a tensor's row length, the tensor
gets the next type down `omnimodel.quant.formats.FALLBACK` that fits; each case is recorded in
`ConvertResult.fallbacks`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from omnimodel.errors import CheckpointError, GGUFError
from omnimodel.ggufio import names
from omnimodel.ggufio.writer import EncodedTensor, write_gguf
from omnimodel.quant.encoders import encode
from omnimodel.quant.formats import fitting_type, get_format
from omnimodel.quant.plugin import QuantContext, Quantizer, load_quantizer

log = logging.getLogger(__name__)
TRANSFORMS = ("transpose", "permute_rope")


@dataclass
class ModelSource:
    """A model to convert: flat state dict (release keys), its config and dataset statistics."""

    state_dict: Mapping[str, torch.Tensor]
    config: Any  # OpenVLAOFTConfig
    stats: dict = field(default_factory=dict)
    name: str = names.ARCH
    model: torch.nn.Module | None = None


@dataclass
class ConvertResult:
    """What was written: path, size, bits per weight of quantizable tensors and overall, types."""

    path: Path
    bytes: int
    bpw: float
    bpw_overall: float
    types: dict[str, str]
    fallbacks: dict[str, tuple[str, str]] = field(default_factory=dict)


def load_source(src: str | os.PathLike, seed: int = 0) -> ModelSource:
    """A checkpoint directory, or a preset name (random init with `seed`)."""
    from omnimodel.archs.openvla_oft import checkpoint
    from omnimodel.archs.openvla_oft.model import PRESETS
    from omnimodel.models import zoo

    path = Path(src)
    if path.is_dir():
        stats_file = path / checkpoint.STATS_FILE
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        cfg = checkpoint.read_config(path)
        return ModelSource(checkpoint.read_state_dict(path), cfg, stats, cfg.name)
    if str(src) in PRESETS:
        model = zoo.build_random_model(str(src), seed)
        sd = dict(model.state_dict())
        return ModelSource(sd, model.cfg, zoo.random_stats(seed, model.cfg.action_dim, model.cfg.proprio_dim), str(src), model)
    raise CheckpointError(f"{src}: neither a checkpoint directory nor a preset ({', '.join(PRESETS)})")


def default_transforms(config: Any) -> dict[str, list[str]]:
    """LLaMA q/k rows get permute_rope (as llama.cpp's converter does); nothing else is transformed."""
    out = {}
    for i in range(int(config.layers)):
        out[f"blk.{i}.attn_q.weight"] = ["permute_rope"]
        out[f"blk.{i}.attn_k.weight"] = ["permute_rope"]
    return out


def permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder each head's rows from [first half, second half] to interleaved pairs (GGML's RoPE)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise GGUFError(f"permute_rope: {rows} rows do not split into {n_head} heads of even size")
    rest = w.shape[1:]
    return w.reshape(n_head, 2, rows // n_head // 2, *rest).transpose(1, 2).reshape(rows, *rest)


def _rope_heads(gguf_name: str, config: Any) -> int:
    return int(config.kv_heads) if ".attn_k." in gguf_name else int(config.heads)


def apply_transforms(gguf_name: str, w: torch.Tensor, steps: list[str], config: Any) -> torch.Tensor:
    """Apply the listed transforms to one tensor, in order."""
    for step in steps:
        if step == "transpose":
            w = w.t().contiguous()
        elif step == "permute_rope":
            w = permute_rope(w, _rope_heads(gguf_name, config))
        else:
            raise GGUFError(f"tensor {gguf_name!r}: unknown transform {step!r}; known: {', '.join(TRANSFORMS)}")
    return w


def gguf_tensors(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map checkpoint keys to GGUF names (fused qkv split into q, k, v rows); SigLIP attn_pool skipped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if ".attn_pool." in key:
            continue  # the SigLIP pooling head is unused by OpenVLA-OFT
        try:
            targets = names.gguf_names(key)
        except KeyError:
            raise CheckpointError(f"checkpoint key {key!r} has no GGUF name; extend omnimodel/ggufio/names.py") from None
        parts = [value] if len(targets) == 1 else list(torch.chunk(value, len(targets), dim=0))
        for name, part in zip(targets, parts, strict=True):
            out[name] = part
    return out


def hyperparameters(config: Any) -> dict[str, Any]:
    """Flat arch-prefixed hyper-parameters, llama.cpp-style for the trunk plus every config scalar."""
    meta: dict[str, Any] = {
        names.arch_key("llm.block_count"): int(config.layers),
        names.arch_key("llm.embedding_length"): int(config.hidden),
        names.arch_key("llm.feed_forward_length"): int(config.mlp),
        names.arch_key("llm.attention.head_count"): int(config.heads),
        names.arch_key("llm.attention.head_count_kv"): int(config.kv_heads),
        names.arch_key("llm.attention.layer_norm_rms_epsilon"): float(config.rms_eps),
        names.arch_key("llm.rope.freq_base"): float(config.rope_theta),
        names.arch_key("llm.context_length"): int(config.max_positions),
        names.arch_key("llm.vocab_size"): int(config.vocab),
    }

    def flatten(prefix: str, d: dict) -> None:
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                flatten(key, v)
            elif isinstance(v, (bool, int, float, str)):
                meta[names.arch_key(f"config.{key}")] = v

    flatten("", dataclasses.asdict(config))
    return meta


def _config_json(config: Any) -> str:
    try:
        from omnimodel.archs.openvla_oft.checkpoint import config_to_json

        return json.dumps(config_to_json(config))
    except (ImportError, AttributeError, TypeError):
        return json.dumps(dataclasses.asdict(config))


def _transformed_shape(w: torch.Tensor, steps: list[str]) -> tuple[int, ...]:
    shape = tuple(w.shape)
    return tuple(reversed(shape)) if steps.count("transpose") % 2 else shape


class _LazyTransformed(Mapping):
    """GGUF name -> f32 tensor after its transforms, computed on access (no full f32 copy of a 7B model)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], steps: dict[str, list[str]], config: Any):
        self._tensors, self._steps, self._config = tensors, steps, config

    def __getitem__(self, name: str) -> torch.Tensor:
        w = self._tensors[name].detach().to(torch.float32)
        return apply_transforms(name, w, self._steps.get(name, []), self._config)

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def convert(
    source: ModelSource | str | os.PathLike,
    out_path: str | os.PathLike,
    quantizer: Quantizer | str,
    metadata: dict[str, Any] | None = None,
    transforms: dict[str, list[str]] | None = None,
    calibration: Any = None,
    budget_bpw: float | None = None,
    device: str | torch.device = "cpu",
) -> ConvertResult:
    """Write `source` as GGUF at `out_path`, quantizable tensors in the types `quantizer` plans."""
    src = source if isinstance(source, ModelSource) else load_source(source)
    q = load_quantizer(quantizer)
    cfg = src.config
    steps = default_transforms(cfg) if transforms is None else transforms
    tensors = gguf_tensors(src.state_dict)
    unknown = sorted(set(steps) - set(tensors))
    if transforms is not None and unknown:
        raise GGUFError(f"transforms name tensors that do not exist: {', '.join(unknown[:3])}")
    for name, lst in steps.items():
        bad = [x for x in lst if x not in TRANSFORMS]
        if bad:
            raise GGUFError(f"tensor {name!r}: unknown transform {bad[0]!r}; known: {', '.join(TRANSFORMS)}")
    shapes = {n: _transformed_shape(w, steps.get(n, [])) for n, w in tensors.items()}
    prepared = _LazyTransformed(tensors, steps, cfg)
    quantizable = _LazyTransformed(
        {n: w for n, w in tensors.items() if names.is_quantizable(n, shapes[n])}, steps, cfg
    )
    ctx = QuantContext(config=cfg, model=src.model, calibration=calibration, budget_bpw=budget_bpw)
    plan = q.plan(quantizable, ctx)
    missing = sorted(set(quantizable) - set(plan))
    if missing:
        raise GGUFError(f"quantizer {q.name!r} gave no type for {missing[0]} (and {len(missing) - 1} more)")

    encoded: list[EncodedTensor] = []
    types: dict[str, str] = {}
    fallbacks: dict[str, tuple[str, str]] = {}
    q_bits = q_n = 0
    with Progress(transient=True) as progress:
        task = progress.add_task("encoding", total=len(prepared))
        for name in prepared:
            w = prepared[name]
            if name in quantizable:
                p = plan[name]
                want = get_format(p.ggml_type).name
                qtype = fitting_type(want, w.shape[1])
                if qtype != want:
                    fallbacks[name] = (want, qtype)
                    log.info("%s: %s does not fit rows of %d; using %s", name, want, w.shape[1], qtype)
                scales = p.scales if qtype == want else None
                imp = None if p.importance is None else p.importance.to(device)
                data = encode(w.to(device), qtype, importance=imp, scales=scales, name=name).cpu()
                shape = tuple(w.shape)
                q_bits += 8 * data.numel()
                q_n += w.numel()
            else:
                qtype, flat = "F32", w.reshape(-1, w.shape[-1]) if w.dim() >= 2 else w.reshape(1, -1)
                data = flat.contiguous().view(torch.uint8).reshape(-1)
                shape = tuple(w.shape) if w.dim() >= 1 else (1,)
            types[name] = qtype
            encoded.append(EncodedTensor(name, qtype, shape, data))
            progress.advance(task)

    meta: dict[str, Any] = {
        names.KEY_ARCH: names.ARCH,
        names.KEY_NAME: src.name,
        names.KEY_QUANT_METHOD: q.name,
        names.KEY_CONFIG_JSON: _config_json(cfg),
        names.KEY_NORM_STATS_JSON: json.dumps(src.stats),
    }
    meta.update(hyperparameters(cfg))
    meta.update(metadata or {})
    path = write_gguf(out_path, encoded, meta)
    total_bits = sum(8 * t.nbytes for t in encoded)
    total_n = sum(int(torch.tensor(t.shape).prod()) for t in encoded)
    return ConvertResult(
        path=Path(path),
        bytes=Path(path).stat().st_size,
        bpw=q_bits / q_n if q_n else 0.0,
        bpw_overall=total_bits / total_n if total_n else 0.0,
        types=types,
        fallbacks=fallbacks,
    )
