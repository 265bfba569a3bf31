"""Checkpoint -> GGUF: name mapping, explicit per-tensor transforms, quantizer plan, encoding, writing.

Tensor names and metadata keys come from the architecture's name table (omnimodel.archs: the
arch owning the source's config); generic keys from omnimodel.ggufio.constants. Each metadata
value is written once: the generic keys, the checkpoint's tokenizer under llama.cpp's
`tokenizer.ggml.*` keys (omnimodel.ggufio.vocab), the arch's runtime metadata (the keys its graph
reads) and the config whole as JSON.

Transforms are data: `transforms[gguf_name]` lists what is applied before encoding, in order:
`"transpose"` (2-D transpose) and `"permute_rope"` (llama.cpp's row permutation of q/k for GGML's
interleaved RoPE; head count from the arch). A fused tensor is split by the name map itself.
`default_transforms(config)` gives the arch's defaults; the reflector may override entries.

Type fallback: when the planned type's block does not divide a tensor's row length, the tensor
gets the next type down `omnimodel.quant.formats.FALLBACK` that fits; each case is recorded in
`ConvertResult.fallbacks`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from omnimodel.errors import CheckpointError, GGUFError
from omnimodel.ggufio import names
from omnimodel.ggufio.constants import Keys
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
    config: Any  # the arch's config dataclass
    stats: dict = field(default_factory=dict)
    name: str = ""  # general.name; the arch's name when empty
    model: torch.nn.Module | None = None
    tokenizer: dict = field(default_factory=dict)  # tokenizer.ggml.* keys (omnimodel.ggufio.vocab)

    @property
    def arch(self):
        """The arch that owns this source's config."""
        return names.arch_for(config=self.config)


@dataclass
class ConvertResult:
    """What was written: path, size, bits per weight of quantizable tensors and overall, types."""

    path: Path
    bytes: int
    bpw: float
    bpw_overall: float
    types: dict[str, str]
    fallbacks: dict[str, tuple[str, str]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: plan (the quantizer), encode


def load_source(src: str | os.PathLike, seed: int = 0) -> ModelSource:
    """A checkpoint directory, or a preset name (random init with `seed`)."""
    from omnimodel import archs

    path = Path(src)
    if path.is_dir():
        arch = archs.for_checkpoint(path)
        cfg = arch.read_config(path)
        name = getattr(cfg, "name", "") or path.name
        return ModelSource(
            arch.read_state_dict(path), cfg, arch.read_stats(path), name, tokenizer=_tokenizer_keys(path)
        )
    known = [p for a in archs.registry().values() for p in a.presets()]
    if str(src) in known:
        model, stats = archs.for_preset(str(src)).random_model(str(src), seed)
        return ModelSource(dict(model.state_dict()), model.cfg, stats, str(src), model)
    raise CheckpointError(f"{src}: neither a checkpoint directory nor a preset ({', '.join(known)})")


def _tokenizer_keys(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's tokenizer as tokenizer.ggml.* keys; {} (and a warning naming why) when it cannot be expressed."""
    from omnimodel.ggufio.vocab import tokenizer_metadata

    try:
        return tokenizer_metadata(ckpt)
    except CheckpointError as exc:
        log.warning("%s; the GGUF gets no tokenizer and the native library takes token ids only", exc)
        return {}


def default_transforms(config: Any) -> dict[str, list[str]]:
    """The arch's default transforms (LLaMA q/k rows: permute_rope, as llama.cpp's converter does)."""
    return names.arch_for(config=config).default_transforms(config)


def permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder each head's rows from [first half, second half] to interleaved pairs (GGML's RoPE)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise GGUFError(f"permute_rope: {rows} rows do not split into {n_head} heads of even size")
    rest = w.shape[1:]
    return w.reshape(n_head, 2, rows // n_head // 2, *rest).transpose(1, 2).reshape(rows, *rest)


def apply_transforms(gguf_name: str, w: torch.Tensor, steps: list[str], config: Any) -> torch.Tensor:
    """Apply the listed transforms to one tensor, in order."""
    for step in steps:
        if step == "transpose":
            w = w.t().contiguous()
        elif step == "permute_rope":
            w = permute_rope(w, names.arch_for(config=config).rope_heads(gguf_name, config))
        else:
            raise GGUFError(
                f"tensor {gguf_name!r}: unknown transform {step!r}; known: {', '.join(TRANSFORMS)}"
            )
    return w


def gguf_tensors(sd: Mapping[str, torch.Tensor], arch=None) -> dict[str, torch.Tensor]:
    """Map checkpoint keys to GGUF names (a fused tensor split into its rows' parts); keys named nothing skipped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        owner = names.arch_for(arch, key=key)
        try:
            targets = owner.gguf_names(key)
        except KeyError:
            raise CheckpointError(
                f"checkpoint key {key!r} has no GGUF name; extend the {owner.name} name table (its names.py)"
            ) from None
        if not targets:
            continue  # in the checkpoint, never run
        parts = [value] if len(targets) == 1 else list(torch.chunk(value, len(targets), dim=0))
        for name, part in zip(targets, parts, strict=True):
            out[name] = part
    return out


def base_metadata(src: ModelSource, quant_method: str) -> dict[str, Any]:
    """The generic keys: architecture, name, quantization method, the config and statistics as JSON."""
    arch = src.arch
    return {
        Keys.General.ARCHITECTURE: arch.name,
        Keys.General.NAME: src.name or arch.name,
        Keys.Omnimodel.QUANT_METHOD: quant_method,
        Keys.Omnimodel.CONFIG_JSON: json.dumps(arch.config_json(src.config)),
        Keys.Omnimodel.DATASET_STATISTICS_JSON: json.dumps(src.stats),
    }


def _tokenizer_rows(tokenizer: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The tokenizer keys, the token list padded to token_embd's rows (llama.cpp's name) when it is shorter."""
    from omnimodel.ggufio.vocab import pad_to

    embd = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD] + ".weight"
    return pad_to(tokenizer, shapes[embd][0]) if tokenizer and embd in shapes else dict(tokenizer)


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


def tensor_progress(console: Console | None = None) -> Progress:
    """A transient `tensors k/N` bar on stderr; disabled off a terminal (a log gets no empty line)."""
    console = console or Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def convert(
    source: ModelSource | str | os.PathLike,
    out_path: str | os.PathLike,
    quantizer: Quantizer | str,
    metadata: dict[str, Any] | None = None,
    transforms: dict[str, list[str]] | None = None,
    calibration: Any = None,
    budget_bpw: float | None = None,
    device: str | torch.device = "cpu",
    extra: dict | None = None,
) -> ConvertResult:
    """Write `source` as GGUF at `out_path`, quantizable tensors in the types `quantizer` plans.

    `extra` goes to the quantizer's context (QuantContext.extra: e.g. `checkpoint`, `report_path`)."""
    src = source if isinstance(source, ModelSource) else load_source(source)
    q = load_quantizer(quantizer)
    cfg = src.config
    steps = default_transforms(cfg) if transforms is None else transforms
    arch = src.arch
    tensors = gguf_tensors(src.state_dict, arch)
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
        {n: w for n, w in tensors.items() if arch.is_quantizable(n, shapes[n])}, steps, cfg
    )
    ctx = QuantContext(config=cfg, model=src.model, calibration=calibration, budget_bpw=budget_bpw, extra=dict(extra or {}))
    t0 = time.perf_counter()
    plan = q.plan(quantizable, ctx)
    t_plan = time.perf_counter() - t0
    missing = sorted(set(quantizable) - set(plan))
    if missing:
        raise GGUFError(f"quantizer {q.name!r} gave no type for {missing[0]} (and {len(missing) - 1} more)")

    encoded: list[EncodedTensor] = []
    types: dict[str, str] = {}
    fallbacks: dict[str, tuple[str, str]] = {}
    q_bits = q_n = 0
    t0 = time.perf_counter()
    with tensor_progress() as progress:
        task = progress.add_task("converter: tensors", total=len(prepared))
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

    t_encode = time.perf_counter() - t0
    meta = base_metadata(src, q.name)
    meta.update(_tokenizer_rows(src.tokenizer, shapes))
    one_dataset = src.stats if ("action" in src.stats or len(src.stats) == 1) else None
    meta.update(arch.runtime_metadata(cfg, one_dataset))
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
        timings={"plan": t_plan, "encode": t_encode},
    )
