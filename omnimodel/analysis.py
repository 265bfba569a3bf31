"""The analyzer's work: module tree, parameter shapes, traced ops and the reference tensor cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from omnimodel.atomic import atomic_path

SAMPLE_INSTRUCTION = "put the black bowl on the plate"
REF_MODULE_KEY = "omnimodel.module.name"
REF_CLASS_KEY = "omnimodel.module.class"
END_TO_END = "end_to_end"


@dataclass
class ModuleRecord:
    """One module of the tree as the planner and the agent see it."""

    name: str
    cls: str
    params: dict[str, list[int]]
    dtypes: list[str]
    children: list[str]
    ops: list[str] = field(default_factory=list)
    input_shapes: list[list[int]] = field(default_factory=list)
    output_shapes: list[list[int]] = field(default_factory=list)
    cached: bool = False
    ran: bool = False


class _OpRecorder(TorchFunctionMode):
    """Records the torch functions each module runs (innermost module on the stack)."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.ops: dict[str, list[str]] = {}
        self.paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.stack and not self.paused:
            name = getattr(func, "__name__", str(func))
            seen = self.ops.setdefault(self.stack[-1], [])
            if name not in seen and not name.startswith("__get") and name not in ("dim", "size"):
                seen.append(name)
        return func(*args, **(kwargs or {}))


@dataclass
class Sample:
    """The analyzer's one deterministic run: the hooked forward, and the end-to-end tensors of its output."""

    run: Callable[[], Any]  # the model's forward (or decoding loop) on the sample, under the hooks
    end_to_end: Callable[[Any], list[tuple[str, np.ndarray]]]  # run()'s output -> end_to_end.gguf tensors
    n_tokens: int  # prompt length in tokens


def sample_observation(
    seed: int, image_size: int, proprio_dim: int, stats: dict, n_images: int = 2
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """A deterministic observation: smooth coloured images and a proprio inside the statistics' range (None if 0-dim)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size
    images = []
    for _ in range(n_images):
        freq = rng.uniform(1, 6, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        chans = [127.5 + 100 * np.sin(2 * np.pi * (freq[c, 0] * xx + freq[c, 1] * yy) + phase[c]) for c in range(3)]
        img = np.stack(chans, -1) + rng.normal(0, 12, (image_size, image_size, 3))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    if not proprio_dim:
        return images, None
    q01 = np.asarray(stats["proprio"]["q01"], np.float32)
    q99 = np.asarray(stats["proprio"]["q99"], np.float32)
    proprio = (q01 + (q99 - q01) * rng.uniform(0.1, 0.9, proprio_dim)).astype(np.float32)
    return images, proprio


def _tensors(obj, prefix: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        return [(prefix, obj)]
    if isinstance(obj, (tuple, list)):
        out = []
        for i, o in enumerate(obj):
            out += _tensors(o, f"{prefix}.{i}")
        return out
    if hasattr(obj, "last_hidden_state") and obj.last_hidden_state is not None:
        return [(prefix, obj.last_hidden_state)]
    if hasattr(obj, "actions") and isinstance(obj.actions, torch.Tensor):
        return [(prefix, obj.actions)]
    return []


def write_reference(path: Path, module: str, cls: str, tensors: list[tuple[str, np.ndarray]], extra: dict | None = None) -> None:
    """One module's cached tensors as a GGUF file (F32 unless integer), written atomically."""
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch="omnimodel-reference")
        w.add_string(REF_MODULE_KEY, module)
        w.add_string(REF_CLASS_KEY, cls)
        for k, v in (extra or {}).items():
            w.add_string(k, v)
        for name, arr in tensors:
            arr = np.ascontiguousarray(arr)
            if arr.dtype.kind in "iu":
                arr = arr.astype(np.int32)
            else:
                arr = arr.astype(np.float32)
            w.add_tensor(name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def read_reference(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a reference file, in PyTorch shape order."""
    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]
        out[t.name] = np.array(t.data).reshape(shape)
    return out


def _two_image_sample(policy, seed: int, instruction: str) -> Sample:
    """The default sample (a policy without `analysis_sample`): two images + proprio through one forward."""
    from omnimodel.models.preprocess import unnormalize_actions

    model = policy.model
    cfg = model.cfg
    images, proprio = sample_observation(seed, cfg.dino.image, cfg.proprio_dim, policy.stats)
    inputs = policy.prepare(images, proprio, instruction)

    def end_to_end(out) -> list[tuple[str, np.ndarray]]:
        norm_actions = out.actions[0].float().numpy()
        return [
            ("images", np.stack(images).astype(np.int32)),
            ("proprio", proprio),
            ("token_ids", inputs.input_ids[0].numpy().astype(np.int32)),
            ("pixel_values", inputs.pixel_values.float().numpy()),
            ("proprio_norm", inputs.proprio.float().numpy()),
            ("actions_norm", norm_actions),
            ("actions", unnormalize_actions(norm_actions, policy.stats)),
        ]

    return Sample(
        lambda: model(inputs.pixel_values, inputs.input_ids, inputs.proprio),
        end_to_end,
        int(inputs.input_ids.shape[1]),
    )


def analysis_sample(policy, seed: int, instruction: str = SAMPLE_INSTRUCTION) -> Sample:
    """The policy's own sample (`policy.analysis_sample`) or the two-image + proprio default."""
    own = getattr(policy, "analysis_sample", None)
    return own(seed, instruction) if own is not None else _two_image_sample(policy, seed, instruction)


def analyze(policy, run_dir: Path, seed: int = 0, cache: str = "auto") -> dict:
    """Run one deterministic sample with hooks; write reference/*.gguf and return analysis.json's content."""
    model = policy.model
    cfg = model.cfg
    ref_dir = run_dir / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    cache_all = cache == "all" or (cache == "auto" and n_params < 100_000_000)

    records: dict[str, ModuleRecord] = {}
    for name, mod in model.named_modules():
        records[name or "<root>"] = ModuleRecord(
            name=name or "<root>",
            cls=type(mod).__name__,
            params={k: list(p.shape) for k, p in mod.named_parameters(recurse=False)},
            dtypes=sorted({str(p.dtype).removeprefix("torch.") for p in mod.parameters(recurse=False)}),
            children=[f"{name}.{c}" if name else c for c, _ in mod.named_children()],
        )

    recorder = _OpRecorder()
    captured: dict[str, tuple[list, list]] = {}
    handles = []

    def pre_hook(name):
        def fn(mod, args, kwargs):
            recorder.stack.append(name)

        return fn

    def post_hook(name):
        def fn(mod, args, kwargs, output):
            recorder.stack.pop()
            recorder.paused = True
            try:
                _capture(name, args, kwargs, output)
            finally:
                recorder.paused = False

        return fn

    def _capture(name, args, kwargs, output):
        if name in captured:  # first call only (the sample runs each module once)
            return
        ins = _tensors(list(args), "in")
        for k, v in kwargs.items():
            if k not in ("attention_mask", "position_ids", "past_key_values", "cache_position"):
                ins += _tensors(v, f"kw.{k}")
        captured[name] = (
            [(n, t.detach().float().cpu().numpy()) for n, t in ins],
            [(n, t.detach().float().cpu().numpy()) for n, t in _tensors(output, "out")],
        )

    for name, mod in model.named_modules():
        if not name:
            continue
        handles.append(mod.register_forward_pre_hook(pre_hook(name), with_kwargs=True))
        handles.append(mod.register_forward_hook(post_hook(name), with_kwargs=True))

    sample = analysis_sample(policy, seed)
    try:
        with torch.no_grad(), recorder:
            out = sample.run()
    finally:
        for h in handles:
            h.remove()

    for name, (ins, outs) in captured.items():
        rec = records[name]
        rec.ran = True
        rec.ops = recorder.ops.get(name, [])
        rec.input_shapes = [list(a.shape) for _, a in ins]
        rec.output_shapes = [list(a.shape) for _, a in outs]
        leafish = not rec.children or cache_all
        if outs and (cache_all or not leafish or rec.cls in ("Block", "LlamaDecoderLayer")):
            fname = name.replace("/", "_")
            tensors = [(n if n != "out.0" else "out", a) for n, a in ins + outs]
            if len(outs) == 1:
                tensors = [(n, a) for n, a in ins] + [("out", outs[0][1])]
            write_reference(ref_dir / f"{fname}.gguf", name, rec.cls, tensors)
            rec.cached = True

    write_reference(
        ref_dir / f"{END_TO_END}.gguf",
        END_TO_END,
        type(model).__name__,
        sample.end_to_end(out),
        {"omnimodel.instruction": SAMPLE_INSTRUCTION},
    )
    return {
        "model": cfg.name,
        "config": cfg.to_dict(),
        "n_params": n_params,
        "sample": {"seed": seed, "instruction": SAMPLE_INSTRUCTION, "n_tokens": sample.n_tokens},
        "modules": [asdict(r) for r in records.values()],
    }


def module_params(analysis: dict, module: str) -> dict[str, list[int]]:
    """Parameter shapes of `module` and its descendants from analysis.json, named relative to it."""
    out = {}
    for rec in analysis["modules"]:
        name = rec["name"]
        if name == module or name.startswith(module + "."):
            rel = name[len(module) + 1 :] if name != module else ""
            for p, shape in rec["params"].items():
                out[f"{rel}.{p}" if rel else p] = shape
    return out


def write_json(path: Path, obj) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
