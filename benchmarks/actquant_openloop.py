"""Open-loop check of quantizers: action error against the unquantized policy on held-out frames.

    PYTHONPATH=. python benchmarks/actquant_openloop.py --checkpoint $(omnimodel zoo path openvla-oft-tiny-suite) \
        --demos DEMOS rtn:iq3_xxs imatrix:iq3_xxs actquant:3.0 actquant:3.0,bandwidth=hbar

A closed-loop row takes minutes; this takes seconds per method (plus calibration), so it is the
quick way to compare options before a closed-loop table. Each SPEC is a `--method` of
`omnimodel quantize` (the budget inside it for actquant). The frames are drawn from every episode
under DEMOS with their own seed, apart from the calibration rule's selection. Reports, per method:
written bpw, mean squared action error against the fp32 policy (normalised units; overall and per suite), L1 against the
demonstrated actions, and the element count per GGML type.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def actions(policy, frames) -> np.ndarray:
    """(N, chunk, dim) normalised actions of `policy` on every frame."""
    from omnimodel.archs.openvla_oft.policy import PolicyInputs

    cpu = torch.device("cpu")
    return np.stack([policy.predict_normalized(PolicyInputs(*frames.inputs(i, cpu, torch.float32))) for i in range(len(frames))])


def main() -> None:
    """Quantize with each spec, simulate the GGUF in PyTorch and compare actions."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--demos", type=Path, required=True, help="LIBERO-style demonstrations (omnimodel suite export)")
    ap.add_argument("--frames", type=int, default=480, help="held-out frames to compare on (96 proved too few to rank methods)")
    ap.add_argument("--calib-frames", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="append the rows to this JSON file")
    ap.add_argument("specs", nargs="+")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    from actquant_plugin.calibration import from_demos
    from actquant_plugin.quantize import quantize
    from benchmarks.actquant_table import load_policy_for
    from omnimodel.archs.openvla_oft.policy import load_policy

    policy = load_policy(args.checkpoint)
    from omnimodel.archs.openvla_oft.prompt import prompt_ids

    frames = from_demos(args.demos, None, policy.tokenizer, policy.cfg.text_vocab, args.frames, seed=123, select=False,
                        prompt=prompt_ids)  # fmt: skip
    ref = actions(policy, frames)
    gt = frames.actions.reshape(ref.shape)
    suites = np.array(frames.suites)
    rows = []
    for spec in args.specs:
        t0 = time.perf_counter()
        calibrated = spec.startswith(("actquant", "imatrix"))
        with tempfile.TemporaryDirectory() as td:
            out = Path(td) / "model.gguf"
            res = quantize(str(args.checkpoint), spec, out, None, args.demos if calibrated else None,
                           args.calib_frames if calibrated else None)  # fmt: skip
            counts: dict[str, int] = {}
            tensors = json.loads(res.report_path.read_text())["tensors"] if res.report_path else {}
            for r in tensors.values():
                counts[r["type"]] = counts.get(r["type"], 0) + r["numel"]
            token_type = tensors.get("token_embd.weight", {}).get("type")
            a = actions(load_policy_for(Path(td), args.checkpoint, "sim"), frames)
        err = ((a - ref) ** 2).reshape(len(a), -1).mean(1)
        per_suite = {s: float(err[suites == s].mean()) for s in sorted(set(suites))}
        row = {"spec": spec, "bpw": res.convert.bpw, "mse_vs_fp32": float(err.mean()), "mse_per_suite": per_suite,
               "l1_vs_demo": float(np.abs(a - gt).mean()), "types": counts, "token_embd": token_type,
               "seconds": time.perf_counter() - t0}  # fmt: skip
        rows.append(row)
        cells = "  ".join(f"{s} {v:.5f}" for s, v in per_suite.items())
        print(f"{spec:48s} {row['bpw']:.3f} bpw  mse vs fp32 {row['mse_vs_fp32']:.5f} ({cells})  l1 vs demo "
              f"{row['l1_vs_demo']:.4f}  ({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    if args.out:
        from omnimodel.atomic import atomic_path

        old = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
        meta = {"checkpoint": str(args.checkpoint), "frames": args.frames, "calib_frames": args.calib_frames,
                "fp32_l1_vs_demo": float(np.abs(ref - gt).mean())}  # fmt: skip
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(meta | {"rows": old + rows}, indent=1))


if __name__ == "__main__":
    from omnimodel.errors import OmniError

    try:
        main()
    except OmniError as e:  # bad checkpoint, demonstrations or method: one line, non-zero exit
        sys.exit(f"error: {e}")
