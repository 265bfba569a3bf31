"""GGUF converter: every tensor in the type the quantizer plugin chooses, laid out as the skills say."""

from __future__ import annotations

import time
from pathlib import Path

from omnimodel.analysis import write_json
from omnimodel.ggufio import names
from omnimodel.graph.state import PortState
from omnimodel.plan import Plan
from omnimodel.quantspec import QuantSpec


def tensor_transforms(cfg, plan: Plan, overrides: dict) -> dict[str, list[str]]:
    """Canonical transforms, replaced by each skill's tensor map, replaced by the reflector's fixes."""
    from omnimodel.ggufio.convert import default_transforms

    canonical = default_transforms(cfg)
    steps = dict(canonical)
    for key, entry in plan.param_transforms.items():
        try:
            targets = names.gguf_names(key, plan.arch)
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


QUANT_REPORT = "quant_report.json"  # a calibration-driven quantizer's report: stage timings, peak memory, per tensor


def _add_stage_times(path: Path, seconds: dict[str, float]) -> None:
    import json

    data = json.loads(path.read_text())
    data.setdefault("timings", {}).update(seconds)
    write_json(path, data)


def converter(state: PortState) -> dict:
    """Writes model.gguf and gguf.json (path, bytes, bpw, per-tensor types)."""
    from omnimodel import archs
    from omnimodel.ggufio.convert import convert, load_source
    from omnimodel.models.preprocess import select_stats

    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    plan = Plan.read(run_dir)
    arch = archs.get(plan.arch)
    src = load_source(state["checkpoint"])
    _, stats = select_stats(src.stats, state.get("unnorm_key"))
    spec = QuantSpec.parse(state.get("quant", "f32"))
    calibration = None
    ckpt = Path(state["checkpoint"])
    t_calib = time.perf_counter()
    if state.get("calib"):
        # The paper's calibration selection over the demonstrations, tokenised and normalised
        # exactly as this checkpoint's policy does it (the arch's calibration hooks).
        hooks = arch.quant_calibration()
        calibration = hooks.calibration_set(state["calib"], src.config, ckpt, stats, state.get("calib_frames"), 0)
    t_calib = time.perf_counter() - t_calib
    if spec.needs_calibration or state.get("calib"):
        src.model = arch.load_model(ckpt)
    report_path = run_dir / QUANT_REPORT
    report_path.unlink(missing_ok=True)  # a re-conversion's report is its own
    result = convert(
        src,
        run_dir / "model.gguf",
        spec.quantizer(),
        metadata=arch.runtime_metadata(src.config, stats),
        transforms=tensor_transforms(src.config, plan, state.get("transform_overrides", {})),
        calibration=calibration,
        budget_bpw=spec.budget,
        extra={"checkpoint": ckpt, "report_path": str(report_path)},
    )
    if report_path.exists():  # the quantizer's own report: add reading the demos (first) and encoding (last)
        _add_stage_times(report_path, {"calibration_set": t_calib, "quantize": result.timings.get("encode", 0.0)})
    write_json(
        run_dir / "gguf.json",
        {
            "path": str(result.path),
            "bytes": result.bytes,
            "bpw": round(result.bpw, 4),
            "bpw_overall": round(result.bpw_overall, 4),
            "types": result.types,
            "fallbacks": result.fallbacks,
            "timings": result.timings,
        },
    )
    key = "converter" if not state.get("iteration") else f"converter.{state['iteration']}"
    return {"timings": {key: time.perf_counter() - t0}}
