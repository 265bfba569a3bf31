"""GGUF converter: every tensor in the type the quantizer plugin chooses, laid out as the skills say."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omnimodel.analysis import write_json
from omnimodel.ggufio import names
from omnimodel.graph.state import PortState


def parse_quant(spec: str) -> tuple[str, float | None]:
    """`actquant:3.0` -> ("actquant", 3.0); `rtn:q4_k` and `q8_0` pass through with no budget."""
    head, _, tail = spec.partition(":")
    if tail:
        try:
            return head, float(tail)
        except ValueError:
            return spec, None
    return spec, None


def tensor_transforms(cfg, plan: dict, overrides: dict) -> dict[str, list[str]]:
    """Canonical transforms, replaced by each skill's tensor map, replaced by the reflector's fixes."""
    from omnimodel.ggufio.convert import default_transforms

    canonical = default_transforms(cfg)
    steps = dict(canonical)
    for key, entry in plan.get("param_transforms", {}).items():
        try:
            targets = names.gguf_names(key)
        except KeyError:
            continue
        for target in targets:
            steps[target] = list(entry["transforms"])
    for target, fix in (overrides or {}).items():
        if fix == "canonical":
            steps[target] = list(canonical.get(target, []))
        else:
            steps[target] = list(fix)
    return {k: v for k, v in steps.items() if v}


def converter(state: PortState) -> dict:
    """Writes model.gguf and gguf.json (path, bytes, bpw, per-tensor types)."""
    from omnimodel.archs.openvla_oft.metadata import runtime_metadata
    from omnimodel.ggufio.convert import convert, load_source
    from omnimodel.models.preprocess import select_stats

    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    plan = json.loads((run_dir / "plan.json").read_text())
    src = load_source(state["checkpoint"])
    _, stats = select_stats(src.stats, state.get("unnorm_key"))
    method, budget = parse_quant(state.get("quant", "f32"))
    calibration = None
    if state.get("calib"):
        # The paper's calibration selection over the demonstrations, tokenised and normalised
        # exactly as this checkpoint's policy does it.
        from actquant_plugin.calibration import from_demos
        from omnimodel.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(Path(state["checkpoint"]))
        calibration = from_demos(state["calib"], stats, tokenizer, src.config.text_vocab, None, 0)
    if method == "actquant" or state.get("calib"):
        from omnimodel.archs.openvla_oft.checkpoint import load_model

        src.model = load_model(Path(state["checkpoint"]))
    result = convert(
        src,
        run_dir / "model.gguf",
        method,
        metadata=runtime_metadata(src.config, stats),
        transforms=tensor_transforms(src.config, plan, state.get("transform_overrides", {})),
        calibration=calibration,
        budget_bpw=budget,
    )
    write_json(
        run_dir / "gguf.json",
        {
            "path": str(result.path),
            "bytes": result.bytes,
            "bpw": round(result.bpw, 4),
            "bpw_overall": round(result.bpw_overall, 4),
            "types": result.types,
            "fallbacks": result.fallbacks,
        },
    )
    key = "converter" if not state.get("iteration") else f"converter.{state['iteration']}"
    return {"timings": {key: time.perf_counter() - t0}}
