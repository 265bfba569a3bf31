"""Quantize a checkpoint or preset with a calibration-driven method (actquant, imatrix) in one call:
loads the PyTorch model, builds the calibration set with the checkpoint's own statistics and
tokenizer, runs the converter, and writes quant_report.json next to the GGUF.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from omnimodel.errors import QuantError

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    """The converter's result plus where the report went."""

    convert: object
    report_path: Path | None


def report_path_for(out: Path) -> Path:
    """`model.gguf` -> `quant_report.json` beside it; `x.gguf` -> `x.quant_report.json`."""
    out = Path(out)
    return out.parent / ("quant_report.json" if out.stem == "model" else f"{out.stem}.quant_report.json")


def quantize(
    src: str,
    method: str,
    out: Path,
    bpw: float | None = None,
    calib: Path | None = None,
    calib_frames: int | None = None,
    options: dict | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> QuantizeResult:
    """Convert `src` with `method` (e.g. actquant, imatrix:q2_k, q4_k_m), calibration from `calib`."""
    from actquant_plugin.plugin import ActQuant, ActQuantOptions
    from omnimodel.ggufio.convert import convert, load_source
    from omnimodel.models.preprocess import select_stats
    from omnimodel.quantspec import QuantSpec

    spec = QuantSpec.parse(method)
    log.info("[1/4] loading %s", src)
    source = load_source(src)
    stats, tok, ckpt = None, None, None
    if Path(src).is_dir():
        ckpt = Path(src)
        from omnimodel import archs
        from omnimodel.models.tokenizer import load_tokenizer

        source.model = archs.for_checkpoint(Path(src)).load_model(Path(src))
        tok = load_tokenizer(Path(src))
        if source.stats:
            _, stats = select_stats(source.stats, None if len(source.stats) == 1 else next(iter(source.stats)))
    if spec.method == "actquant":
        opts = ActQuantOptions.parse(spec.arg)
        for k, v in (options or {}).items():
            if v is not None:
                setattr(opts, k, v)
        if bpw is not None:
            opts.bpw = bpw
        opts.calib_frames = calib_frames if calib_frames is not None else opts.calib_frames
        opts.report = opts.report or str(report_path_for(out))
        opts.validate()
        if opts.bpw is None:
            raise QuantError("actquant needs a budget: --bpw 3.0 (or --method actquant:3.0)")
        quantizer = ActQuant(opts)
    else:
        quantizer = spec.quantizer()
    calibration = None
    t_calib = time.perf_counter()
    if calib is not None:
        log.info("[2/4] reading calibration demonstrations under %s (%s frames)", calib, calib_frames or "all")
        hooks = source.arch.quant_calibration()  # how the arch's policy builds its inputs and targets
        calibration = hooks.calibration_set(calib, source.config, ckpt, stats, calib_frames, seed, tok)
    t_calib = time.perf_counter() - t_calib
    extra = {"stats": stats, "tokenizer": tok, "checkpoint": ckpt, "calib_frames": calib_frames}
    meta = source.arch.runtime_metadata(source.config, stats or source.stats or None)
    log.info("[3/4] planning types and scales with %s, then encoding", spec)
    res = convert(source, out, quantizer, metadata=meta, calibration=calibration, budget_bpw=bpw, device=device,
                  extra={k: v for k, v in extra.items() if v is not None})  # fmt: skip
    log.info("[4/4] wrote %s (%.3f bpw quantized)", res.path, res.bpw)
    path = None
    if getattr(quantizer, "report", None) is not None:
        path = add_gguf_result(quantizer.opts.report, res, t_calib)
    return QuantizeResult(res, path)


def add_gguf_result(report_path: str | Path, res, calibration_set_s: float = 0.0) -> Path:
    """Add what the converter wrote (path, bytes, bits per weight), its encode time and the time reading the
    demonstrations took to quant_report.json."""
    from omnimodel.atomic import atomic_path

    path = Path(report_path)
    data = json.loads(path.read_text())
    data["gguf"] = {"path": str(res.path), "bytes": res.bytes, "bpw": res.bpw, "bpw_overall": res.bpw_overall,
                    "fallbacks": {k: list(v) for k, v in res.fallbacks.items()}}  # fmt: skip
    data.setdefault("timings", {}).update({"calibration_set": calibration_set_s, "quantize": res.timings.get("encode", 0.0)})
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))
    return path
