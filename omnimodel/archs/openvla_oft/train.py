"""Behaviour cloning of OpenVLA-OFT on the task suite: L1 on the action head plus cross-entropy on the action tokens.

Data come from the scripted expert run on the fly (no HDF5 needed: the GPU box may lack h5py) or
from LIBERO-style HDF5 demonstrations (`--demos DIR`, read through `omnimodel.calib`). Each frame
holds the two upright 224x224 images the policy sees in `omnimodel eval`, the raw 8-D proprio and
the 8x7 action chunk in OpenVLA-OFT's training convention (gripper 1 open / 0 close). Some
episodes are "DART" episodes: random action blocks perturb the executed actions while the labels
stay the expert's clean plan from the state actually reached, so the policy learns to recover.

Preprocessing matches the eval exactly in distribution: a random square crop of sqrt(0.9) of each
side (OFT's random_resized_crop, scale 0.9, ratio 1), sampled like tf.image.crop_and_resize and
truncated to uint8 levels, plus mild colour jitter; at zero offset the crop is the eval's center
crop. Proprio and actions are normalised with the training set's q01/q99 statistics (BOUNDS_Q99),
which are written to dataset_statistics.json under `omnimodel_suite`.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from omnimodel.archs.openvla_oft.model import (
    DINO_MEAN,
    DINO_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    STOP_INDEX,
    ForwardOutput,
    OpenVLAOFT,
    OpenVLAOFTConfig,
)
from omnimodel.atomic import atomic_dir, atomic_path
from omnimodel.errors import ConfigError
from omnimodel.models.preprocess import CROP_SCALE
from omnimodel.suite import demos
from omnimodel.suite.demos import DemoData
from omnimodel.training import (
    BCConfig,
    Ema,
    TrainResult,
    adamw,
    demo_spec,
    eval_section,
    lr_at,
    record_sections,
    resolve_device,
)

log = logging.getLogger("omnimodel.train")  # the CLI raises this logger to INFO
STATS_KEY = "omnimodel_suite"
CHUNK = 8
N_BINS = 256


# ---------------------------------------------------------------- configuration
@dataclass
class TrainConfig(BCConfig):
    """Every knob of a training run (written to TRAINING.md and train_log.jsonl)."""

    preset: str = "openvla-oft-tiny"
    ce_weight: float = 0.2
    mixed_batches: bool = True  # mix tasks (prompt lengths) in a batch through padding + a key mask


# ---------------------------------------------------------------- data (omnimodel.suite.demos, in OFT's action convention)
def policy_convention(actions: np.ndarray) -> np.ndarray:
    """LIBERO actions (gripper -1 open / +1 close) -> OFT training convention (1 open / 0 close), as omnimodel.calib."""
    from omnimodel.calib import policy_actions

    return policy_actions(actions)


def record_episode(task, env_seed: int, dart: bool, cfg: TrainConfig) -> dict[str, np.ndarray] | None:
    """One expert episode (omnimodel.suite.demos.record_episode), its 8-step chunks in OFT's convention."""
    ep = demos.record_episode(task, env_seed, dart, demo_spec(cfg, CHUNK))
    if ep is not None:
        ep["actions"] = policy_convention(ep["actions"])
    return ep


def generate_demos(cfg: TrainConfig, show_progress: bool = True) -> DemoData:
    """Expert episodes for every task of cfg.suites (omnimodel.suite.demos), actions in OFT's convention."""
    data = demos.generate_demos(demo_spec(cfg, CHUNK), show_progress)
    data.actions = policy_convention(data.actions)
    return data


def load_hdf5_demos(root: str | Path) -> DemoData:
    """Frames of LIBERO-style HDF5 demonstrations via omnimodel.calib (needs h5py), actions in OFT's convention."""
    data = demos.load_hdf5_demos(root, CHUNK)
    data.actions = policy_convention(data.actions)
    return data


def dataset_statistics(data: DemoData) -> dict:
    """dataset_statistics.json content (release format) under STATS_KEY: q01/q99 of per-step actions and proprio."""

    from omnimodel.calib import stat_block as block

    action = block(data.actions[:, 0])  # the executed action of each frame
    action["mask"] = [True] * 6 + [False]
    return {
        STATS_KEY: {
            "action": action,
            "proprio": block(data.proprio),
            "num_transitions": len(data),
            "num_trajectories": data.episodes,
        }
    }


def action_tokens(norm_actions: np.ndarray, text_vocab: int) -> np.ndarray:
    """Spec "Discrete pathway": token = text_vocab - digitize(clip(a, -1, 1), linspace(-1, 1, 256)), rows flattened step-major."""
    bins = np.linspace(-1.0, 1.0, N_BINS)
    d = np.digitize(np.clip(norm_actions, -1.0, 1.0), bins)
    return (text_vocab - d).reshape(len(norm_actions), -1).astype(np.int64)


# ---------------------------------------------------------------- augmentation (matches the eval's center crop)
def crop_resize(x: torch.Tensor, offset: torch.Tensor, crop_scale: float = CROP_SCALE) -> torch.Tensor:
    """tf.image.crop_and_resize of a sqrt(crop_scale)-side box shifted by `offset` (B, 2) (x, y in [-1, 1] units); x (B, 3, H, W) in [0, 1]."""
    b, _, h, w = x.shape
    s = math.sqrt(crop_scale)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = offset
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=True)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_INV = np.linalg.inv(_YIQ.astype(np.float64)).astype(np.float32)


_CONSTS: dict[tuple[int, str], torch.Tensor] = {}


def _const(arr, device: torch.device) -> torch.Tensor:
    """A small constant tensor cached per device (a fresh host-to-device copy each step would stall the GPU queue)."""
    key = (id(arr), str(device))
    if key not in _CONSTS:
        _CONSTS[key] = torch.tensor(np.asarray(arr, np.float32), device=device)
    return _CONSTS[key]


def _rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def colour_jitter(x: torch.Tensor, gen: torch.Generator, hue: float) -> torch.Tensor:
    """OFT-style jitter on (B, 3, H, W) in [0, 1]: brightness +-0.2, contrast and saturation x[0.8, 1.2], hue +-`hue` turns."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=gen, device=gen.device)).to(x.device)

    x = (x + u(-0.2, 0.2)).clamp(0, 1)
    mean = _rgb_to_gray(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * u(0.8, 1.2) + mean).clamp(0, 1)
    gray = _rgb_to_gray(x)
    x = ((x - gray) * u(0.8, 1.2) + gray).clamp(0, 1)
    if hue > 0:  # rotate chroma in YIQ space by 2 pi * delta
        ang = u(-hue, hue).view(b) * 2 * math.pi
        cos, sin = torch.cos(ang), torch.sin(ang)
        yiq, rgb = _const(_YIQ, x.device), _const(_YIQ_INV, x.device)
        rot = torch.zeros(b, 3, 3, device=x.device)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        m = rgb @ rot @ yiq  # (B, 3, 3)
        x = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)
    return x


_NORMS = ((DINO_MEAN, DINO_STD), (SIGLIP_MEAN, SIGLIP_STD))


def batch_pixels(
    images: torch.Tensor, gen: torch.Generator | None, augment: bool, hue: float = 0.02
) -> torch.Tensor:
    """(B, n_img, H, W, 3) uint8 -> (B, 6 n_img, H, W) float: crop (random offset when augmenting), jitter, uint8 levels, tower norms."""
    b, n, h, w, _ = images.shape
    x = images.permute(0, 1, 4, 2, 3).reshape(b * n, 3, h, w).float() * (1.0 / 255.0)
    s = math.sqrt(CROP_SCALE)
    if augment:
        offset = (torch.rand(b * n, 2, generator=gen, device=gen.device).to(x.device) * 2 - 1) * (1 - s)
    else:
        offset = torch.zeros(b * n, 2, device=x.device)
    x = crop_resize(x, offset).clamp(0, 1)
    if augment:
        x = colour_jitter(x, gen, hue)
    x = torch.floor(x * 255.5).clamp(max=255) / 255.0  # the eval's truncation back to uint8
    x = x.reshape(b, n, 3, h, w)
    chans = []
    for i in range(n):
        for mean, std in _NORMS:
            m = _const(mean, x.device).view(1, 3, 1, 1)
            sd = _const(std, x.device).view(1, 3, 1, 1)
            chans.append((x[:, i] - m) / sd)
    return torch.cat(chans, dim=1)


def task_prompt_table(
    prompt_ids: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each task's prompt ids right-padded with `pad_id` into one (n_tasks, max_len) tensor, and the lengths."""
    longest = max(len(p) for p in prompt_ids)
    table = torch.full((len(prompt_ids), longest), pad_id, dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        table[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    lengths = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
    return table.to(device), lengths.to(device)


def padded_forward(
    model: OpenVLAOFT,
    pixel_values: torch.Tensor,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    proprio: torch.Tensor,
) -> ForwardOutput:
    """OpenVLAOFT.forward for a batch whose prompts differ in length (training only).

    Each sample's sequence is laid out exactly as in the unpadded forward (BOS, patches, proprio,
    prompt, zeroed placeholders, stop) and right-padded; pad keys are masked out of the
    bidirectional attention and positions start at 0 for every sample, so each sample's real rows
    equal its own unpadded forward. `ids` is (B, L) right-padded, `lengths` (B,) the real lengths.
    """
    cfg = model.cfg
    n_act = cfg.n_action_tokens
    b, longest = ids.shape
    total = longest + n_act + 1
    pos = torch.arange(total, device=ids.device)
    rel = pos[None, :] - lengths[:, None]  # 0 at the first placeholder
    seq = torch.cat(
        [ids, torch.full((b, n_act + 1), int(cfg.pad_token_id), dtype=ids.dtype, device=ids.device)], 1
    )
    seq = torch.where((rel >= 0) & (rel < n_act), torch.ones_like(seq), seq)
    seq = torch.where(rel == n_act, torch.full_like(seq, STOP_INDEX), seq)
    valid = rel <= n_act
    x = model.assemble_sequence(pixel_values, seq, (rel < 0) | (rel == n_act), proprio)
    n_mid = cfg.n_patch_tokens  # patches of all images + the proprio token
    valid = torch.cat(
        [valid[:, :1], torch.ones(b, n_mid, dtype=torch.bool, device=ids.device), valid[:, 1:]], 1
    )
    length = x.shape[1]
    mask = torch.zeros(b, 1, 1, length, dtype=x.dtype, device=x.device)
    mask = mask.masked_fill(~valid[:, None, None, :], torch.finfo(x.dtype).min).expand(b, 1, length, length)
    hidden = model.language_model.model(
        inputs_embeds=x, attention_mask=mask, use_cache=False
    ).last_hidden_state
    start = cfg.n_patch_tokens + lengths - 1  # one before each sample's first placeholder
    rows_idx = start[:, None] + torch.arange(n_act, device=ids.device)[None, :]
    rows = torch.gather(hidden, 1, rows_idx[:, :, None].expand(-1, -1, hidden.shape[-1]))
    return ForwardOutput(model.action_head(rows), rows, model.language_model.lm_head(rows))


# ---------------------------------------------------------------- training
class _Buckets:
    """Frames grouped by prompt length (a batch must share one prompt length); sampled in proportion to size."""

    def __init__(self, task: np.ndarray, prompt_ids: list[list[int]], seed: int):
        lengths = np.array([len(prompt_ids[t]) for t in task])
        self.groups = [np.flatnonzero(lengths == n) for n in sorted(set(lengths.tolist()))]
        sizes = np.array([len(g) for g in self.groups], np.float64)
        self.p = sizes / sizes.sum()
        self.rng = np.random.default_rng([seed, 1])

    def sample(self, batch: int) -> np.ndarray:
        g = self.groups[self.rng.choice(len(self.groups), p=self.p)]
        return np.sort(self.rng.choice(g, size=batch, replace=len(g) < batch))


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    data: DemoData | None = None,
    model_cfg: OpenVLAOFTConfig | None = None,
    command: str | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train a policy by behaviour cloning and write it to `out_dir` in the released checkpoint layout."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from omnimodel.archs.openvla_oft.model import init_weights, preset
    from omnimodel.archs.openvla_oft.prompt import prompt_ids as build_prompt_ids
    from omnimodel.models import preprocess
    from omnimodel.models.tokenizer import build_char_tokenizer

    if cfg.steps < 1 or cfg.batch < 1:
        raise ConfigError("--steps and --batch must be at least 1")
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if data is None:
        data = load_hdf5_demos(cfg.demos) if cfg.demos else generate_demos(cfg, show_progress)
    t_data = time.perf_counter() - t_start
    log.info("training data: %d frames from %d episodes (%.1f s)", len(data), data.episodes, t_data)
    stats_all = dataset_statistics(data)
    stats = stats_all[STATS_KEY]

    mcfg = model_cfg or preset(cfg.preset)
    model = OpenVLAOFT(mcfg)
    init_weights(model, cfg.seed)
    if cfg.init:
        from omnimodel.archs.openvla_oft.checkpoint import load_model

        start = load_model(Path(cfg.init))
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as exc:
            raise ConfigError(
                f"--init {cfg.init}: weights do not fit preset {cfg.preset} ({str(exc).splitlines()[0]}); pass a checkpoint of that preset"
            ) from None
        log.info("initialised from %s", cfg.init)
    model.to(device).train()
    tok = build_char_tokenizer(mcfg.text_vocab)
    prompt_ids = [build_prompt_ids(tok, ins) for ins in data.instructions]

    # Targets and inputs, precomputed once.
    norm = np.stack([preprocess.normalize_actions(a, stats) for a in data.actions])
    tokens = torch.from_numpy(action_tokens(norm, mcfg.text_vocab)).to(device)
    norm_t = torch.from_numpy(norm).to(device)
    proprio_t = torch.from_numpy(np.stack([preprocess.normalize_proprio(p, stats) for p in data.proprio])).to(
        device
    )
    images_t = torch.from_numpy(data.images)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images_t.numel() < 0.6 * free:
            images_t = images_t.to(device)
        else:
            images_t = images_t.pin_memory()
    ids_t = [torch.tensor(p, dtype=torch.long, device=device) for p in prompt_ids]
    task_t = torch.from_numpy(data.task)
    buckets = _Buckets(data.task, prompt_ids, cfg.seed)
    task_ids, task_len = task_prompt_table(prompt_ids, mcfg.pad_token_id, device)
    frame_rng = np.random.default_rng([cfg.seed, 2])
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    opt = adamw(model, cfg, device, ("norm", "embed", "token"))
    ema = Ema(model, cfg.ema)
    use_amp = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    planned_steps = cfg.steps

    task_d = torch.from_numpy(data.task).to(device)

    def forward(px: torch.Tensor, ids: torch.Tensor | None, idx_d: torch.Tensor) -> ForwardOutput:
        if ids is None:
            t = task_d[idx_d]
            return padded_forward(model, px, task_ids[t], task_len[t], proprio_t[idx_d])
        return model(px, ids, proprio_t[idx_d], with_logits=True)

    log_rows: list[dict] = []
    acc: dict[str, Any] = {"loss": 0.0, "l1": 0.0, "ce": 0.0, "tok_acc": 0.0}
    n_acc = 0
    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    t_train = time.perf_counter()
    with Progress(*columns, disable=not show_progress, transient=True) as bar:
        tid = bar.add_task("train", total=cfg.steps, info="")
        t_probe = time.perf_counter()
        for step in range(cfg.steps):
            if cfg.mixed_batches:  # any frames, any tasks: prompts padded, pad keys masked
                idx_np = np.sort(frame_rng.choice(len(data), size=cfg.batch, replace=len(data) < cfg.batch))
            else:  # one prompt length per batch
                idx_np = buckets.sample(cfg.batch)
            idx = torch.from_numpy(idx_np)
            idx_d = idx.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else idx
            imgs = (
                images_t[idx_d] if images_t.device == device else images_t[idx].to(device, non_blocking=True)
            )
            px = batch_pixels(imgs, gen, cfg.augment, cfg.hue)
            if cfg.mixed_batches:
                ids = None
            else:
                ids = ids_t[int(task_t[idx[0]])].unsqueeze(0).expand(cfg.batch, -1)
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            try:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    out = forward(px, ids, idx_d)
            except RuntimeError as exc:  # bf16 autocast unsupported by some op: fall back to fp32 (TF32)
                if not use_amp or step > 0:
                    raise
                log.warning("bf16 autocast failed (%s); training in fp32", str(exc).splitlines()[0])
                use_amp = False
                out = forward(px, ids, idx_d)
            l1 = (out.actions.float() - norm_t[idx_d]).abs().mean()
            logits = out.action_logits.float()
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[idx_d].reshape(-1))
            loss = l1 + cfg.ce_weight * ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(step)
            with torch.no_grad():  # accumulate on the device: no host sync per step
                tok_acc = (logits.argmax(-1) == tokens[idx_d]).float().mean()
                for key, val in (("loss", loss), ("l1", l1), ("ce", ce), ("tok_acc", tok_acc)):
                    acc[key] = acc[key] + val.detach()
            n_acc += 1
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                row = {"step": step + 1, "lr": lr, **{k: float(v) / n_acc for k, v in acc.items()},
                       "seconds": round(time.perf_counter() - t_train, 2)}  # fmt: skip
                log_rows.append(row)
                log.info(
                    "step %d loss %.4f l1 %.4f ce %.3f tok_acc %.3f",
                    row["step"],
                    row["loss"],
                    row["l1"],
                    row["ce"],
                    row["tok_acc"],
                )
                acc = dict.fromkeys(acc, 0.0)
                n_acc = 0
                bar.update(tid, info=f"l1 {row['l1']:.4f} ce {row['ce']:.3f}")
            bar.advance(tid)
            if cfg.time_budget > 0 and step + 1 == 60:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                per_step = (time.perf_counter() - t_probe) / 40
                fit = int(cfg.time_budget / per_step)
                if fit < cfg.steps:
                    cfg.steps = max(fit, cfg.warmup + 100, 61)
                    bar.update(tid, total=cfg.steps)
                    log.warning("%.1f ms/step: %d steps fit the %.0f s budget (planned %d)", 1e3 * per_step,
                                cfg.steps, cfg.time_budget, planned_steps)  # fmt: skip
            if step + 1 == 20:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t_probe = time.perf_counter()
            if step + 1 >= cfg.steps:
                break

    ema.copy_to_model()
    model.eval().cpu().float()
    out_dir = Path(out_dir)
    seconds = time.perf_counter() - t_start
    summary = {
        "frames": len(data),
        "episodes": data.episodes,
        "data_seconds": round(t_data, 1),
        "train_seconds": round(time.perf_counter() - t_train, 1),
        "steps_planned": planned_steps,
        "steps_run": cfg.steps,
        "bf16_autocast": use_amp,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
    }
    save_checkpoint(model, out_dir, stats_all, log_rows, cfg, summary, command)
    result = TrainResult(out_dir, log_rows, len(data), data.episodes, seconds)
    if cfg.eval_episodes > 0:
        result.eval = evaluate(out_dir, cfg.eval_episodes, cfg.seed, device, cfg.suites, show_progress)
        write_training_md(out_dir, cfg, log_rows, summary, command, result.eval)
    return result


def save_checkpoint(
    model: OpenVLAOFT,
    out_dir: Path,
    stats: dict,
    log_rows: list[dict],
    cfg: TrainConfig,
    summary: dict,
    command: str | None,
) -> None:
    """Write the released layout plus train_log.jsonl and TRAINING.md, atomically."""
    from omnimodel.archs.openvla_oft.checkpoint import write_checkpoint
    from omnimodel.archs.openvla_oft.zoo import SHARD_BYTES
    from omnimodel.models.tokenizer import build_char_tokenizer, save_tokenizer_files

    tok = build_char_tokenizer(model.cfg.text_vocab)
    with atomic_dir(out_dir) as tmp:
        write_checkpoint(model, tmp, stats, lambda d: save_tokenizer_files(tok, d, model.cfg.pad_token_id),
                         SHARD_BYTES.get(model.cfg.name, 4_000_000))  # fmt: skip
        (tmp / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log_rows))
        _training_md(tmp / "TRAINING.md", cfg, log_rows, summary, command, None)


def write_training_md(
    out_dir: Path, cfg: TrainConfig, log_rows: list[dict], summary: dict, command: str | None, ev: dict | None
) -> None:
    """(Re)write TRAINING.md atomically, with the eval table when there is one."""
    with atomic_path(Path(out_dir) / "TRAINING.md") as tmp:
        _training_md(tmp, cfg, log_rows, summary, command, ev)


def _training_md(
    path: Path, cfg: TrainConfig, log_rows: list[dict], summary: dict, command: str | None, ev: dict | None
) -> None:
    lines = [
        "# Training record",
        "",
        "Behaviour cloning of OpenVLA-OFT on the omnimodel task suite (L1 on the action head +"
        f" {cfg.ce_weight} x cross-entropy on the LM-head action tokens), written by `omnimodel.train`.",
        "",
    ]
    lines += record_sections(cfg, summary, command, "(called from Python: omnimodel.train.train)")
    if log_rows:
        first, last = log_rows[0], log_rows[-1]
        lines += [
            "## Loss",
            "",
            "| step | loss | L1 (normalised) | CE | token acc |",
            "|---:|---:|---:|---:|---:|",
            *(
                f"| {r['step']} | {r['loss']:.4f} | {r['l1']:.4f} | {r['ce']:.3f} | {r['tok_acc']:.3f} |"
                for r in (first, last)
            ),
            "",
            "Every logged step is in train_log.jsonl.",
            "",
        ]
    lines += eval_section(ev)
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- eval through C's omnimodel.eval
def load_device_policy(ckpt: str | Path, device: torch.device):
    """omnimodel.models.load(ckpt) with the model moved to `device` (TorchPolicy builds CPU tensors; this moves them)."""
    from omnimodel import models
    from omnimodel.archs.openvla_oft.policy import PolicyInputs, TorchPolicy

    base = models.load(ckpt)
    if device.type == "cpu":
        return base

    class DevicePolicy(TorchPolicy):
        """A TorchPolicy whose inputs follow the model onto the accelerator."""

        def prepare(self, images, proprio, instruction) -> PolicyInputs:
            inp = super().prepare(images, proprio, instruction)
            return PolicyInputs(inp.pixel_values.to(device), inp.input_ids.to(device), inp.proprio.to(device))

    return DevicePolicy(base.model.to(device), base.tokenizer, base.stats, base.center_crop)


def evaluate(
    ckpt: Path, episodes_per_task: int, seed: int, device: torch.device, suites, show_progress: bool = True
) -> dict[str, Any]:
    """Closed-loop success of the written checkpoint with omnimodel.eval; writes eval.json beside it."""
    from omnimodel import eval as ev

    policy = load_device_policy(ckpt, device)
    result = ev.evaluate_target(ckpt, policy, f"pytorch-{device.type}", 16.0, ev.suite_eval_tasks(list(suites)),
                                episodes_per_task, seed, show_progress=show_progress)  # fmt: skip
    ev.write_json(result, Path(ckpt) / "eval.json")
    return result
