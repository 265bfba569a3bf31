"""CPU proxy of the GPU training run: the same data, recipe and closed-loop eval with a reduced-resolution model.

The tiny preset (14-px patches, 2 x 256 image tokens) costs about a second per frame per step on a
shared 2-core CPU, so a CPU can only check the recipe at lower "resolution of effort": 28-px
patches (64 tokens per image), width 128, fewer episodes and steps. The success it reaches is a
lower bound on what the recipe does with the real preset on the GPU (`omnimodel train`).

    PYTHONPATH=. nice python benchmarks/train_cpu_proxy.py --out /tmp/proxy --steps 1500
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from omnimodel.archs.openvla_oft.model import OpenVLAOFTConfig, TowerConfig
from omnimodel.train import TrainConfig, evaluate, train


def proxy_config() -> OpenVLAOFTConfig:
    """28-px patches, width 128: about 1/40 of the tiny preset's compute per frame."""
    tower = dict(width=128, depth=3, heads=4, patch=28)
    return OpenVLAOFTConfig(
        TowerConfig("omnimodel/proxy_dino", mlp=256, n_registers=4, class_token=True, layer_scale=True, **tower),
        TowerConfig("omnimodel/proxy_siglip", mlp=384, attn_pool=True, **tower),
        hidden=128, layers=2, heads=4, kv_heads=4, mlp=384, vocab=576, text_vocab=512, pad_token_id=512,
        name="openvla-oft-proxy",
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--episodes-per-task", type=int, default=6)
    ap.add_argument("--eval-episodes", type=int, default=3)
    ap.add_argument("--suites", default="libero_spatial,libero_object,libero_goal,libero_10")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig(
        steps=args.steps, batch=args.batch, lr=args.lr, warmup=100, log_every=50, device="cpu",
        episodes_per_task=args.episodes_per_task, workers=args.workers, suites=tuple(args.suites.split(",")),
    )  # fmt: skip
    res = train(cfg, args.out, model_cfg=proxy_config(), command="benchmarks/train_cpu_proxy.py " + str(vars(args)),
                show_progress=False)  # fmt: skip
    print(json.dumps(res.log[0]), json.dumps(res.log[-1]), sep="\n")
    if args.eval_episodes:
        ev = evaluate(
            res.out_dir, args.eval_episodes, cfg.seed, torch.device("cpu"), cfg.suites, show_progress=False
        )
        print(json.dumps({"success_per_suite": ev["success_per_suite"], "success_mean": ev["success_mean"],
                          "episodes": ev["episodes"]}))  # fmt: skip


if __name__ == "__main__":
    main()
