"""Behaviour cloning of π0.5 / π0 on the task suite with the flow-matching loss.

The loss is the spec's (and openpi's / LeRobot's): for a normalised action chunk a, noise ε ~ N(0, I)
and t ~ Beta(1.5, 1)·0.999 + 0.001, the model sees x_t = t·ε + (1−t)·a and regresses the velocity
u = ε − a; the mean squared error is taken over the robot's real action dims (LeRobot truncates to
the dataset's action width). One pass runs prefix and suffix together (`PI0.joint_velocity`).

Data are omnimodel.suite.demos' expert frames (or LIBERO-style HDF5 demos), actions in LIBERO's
convention (gripper -1 open / +1 close), normalised by the checkpoint's own statistics and
transforms: the checkpoint is written in LeRobot's layout, so the state and actions use its
normalisation mapping (quantiles for π0.5) and π0.5 writes the discretised state into the prompt,
exactly as `TorchPolicy.prepare` builds it at inference (checked on a sample of frames after
training). The third camera slot (right wrist) stays empty: masked tokens take no part in the
attention and do not advance positions, so the training pass leaves the empty slot out (the
result is the same) and the policy masks it at inference.

Augmentation keeps the eval's distribution: a random shift of up to `shift` of the image side
(border replicated, zero shift is the image itself) and mild colour jitter, then uint8 levels.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from omnimodel.archs.pi0 import checkpoint as ck
from omnimodel.archs.pi0 import model as pi_model
from omnimodel.archs.pi0.model import PI0, PiConfig
from omnimodel.atomic import atomic_dir, atomic_path
from omnimodel.errors import ConfigError
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
ROBOT_ACTION_DIM = 7


# ---------------------------------------------------------------- configuration
@dataclass
class TrainConfig(BCConfig):
    """Every knob of a training run (written to TRAINING.md and train_log.jsonl)."""

    lr: float = 3e-4
    warmup: int = 500
    preset: str = "pi05-tiny"
    shift: float = 0.04  # largest random image shift, as a fraction of the side
    beta_a: float = 1.5  # t ~ Beta(beta_a, beta_b) * 0.999 + 0.001
    beta_b: float = 1.0
    weight_dtype: str = "bfloat16"  # dtype of the written model.safetensors (the full presets' is bf16)


def _dtype(name: str) -> torch.dtype:
    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if name not in table:
        raise ConfigError(f"weight dtype {name!r}: choose {', '.join(table)}")
    return table[name]


# ---------------------------------------------------------------- data and statistics
def dataset_stats(data: DemoData) -> ck.Stats:
    """LeRobot's per-feature statistics (mean, std, min, max, q01, q99) of the state and the executed actions."""
    from omnimodel.calib import stat_block

    def block(x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.float64) for k, v in stat_block(x).items()}

    return ck.Stats(state=block(data.proprio), action=block(data.actions[:, 0]), source="omnimodel suite")


def frame_prompts(policy, data: DemoData) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's prompt ids and mask (N, L) as `policy.prepare` builds them (state bins in π0.5's prompt)."""
    from omnimodel.archs.pi0.policy import normalize
    from omnimodel.archs.pi0.tokenizer import discretize_state, prompt_text, tokenize_prompt

    spec, cfg = policy.spec, policy.cfg
    cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    ids = np.zeros((len(data), cfg.max_token_len), np.int64)
    mask = np.zeros((len(data), cfg.max_token_len), bool)
    for i in range(len(data)):
        bins = None
        if spec.state_in_prompt:
            norm = normalize(data.proprio[i].astype(np.float64), policy.stats.state, spec.state_mode, spec.eps,
                             spec.origin == "openpi")  # fmt: skip
            bins = discretize_state(norm)
        key = (int(data.task[i]), None if bins is None else tuple(int(b) for b in bins))
        if key not in cache:
            text = prompt_text(data.instructions[data.task[i]], bins, clean=spec.clean_task)
            cache[key] = tokenize_prompt(policy.tokenizer, text, cfg.max_token_len)
        ids[i], mask[i] = cache[key]
    longest = int(mask.sum(1).max())
    return ids[:, :longest], mask[:, :longest]


def norm_actions(policy, actions: np.ndarray) -> np.ndarray:
    """(N, H, 7) dataset actions -> (N, H, action_dim) model units, zero-padded beyond the robot's dims."""
    from omnimodel.archs.pi0.policy import normalize

    spec, cfg = policy.spec, policy.cfg
    norm = normalize(
        actions.astype(np.float64), policy.stats.action, spec.action_mode, spec.eps, spec.origin == "openpi"
    )
    out = np.zeros((*actions.shape[:2], cfg.action_dim), np.float32)
    out[..., : actions.shape[-1]] = norm
    return out


# ---------------------------------------------------------------- augmentation
def _rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def batch_images(
    images: torch.Tensor,
    gen: torch.Generator | None,
    cfg: TrainConfig,
    augment: bool,
    size: int | None = None,
) -> list[torch.Tensor]:
    """(B, n, H, W, 3) uint8 -> per camera (B, 3, S, S) in [-1, 1]; random shift and colour jitter when augmenting.

    Square frames of another side are resized to `size` as `image_tensor` resizes them at inference.
    """
    b, n, h, w, _ = images.shape
    x = images.permute(0, 1, 4, 2, 3).reshape(b * n, 3, h, w).float() * (1.0 / 255.0)
    if size is not None and (h, w) != (size, size):
        if h != w:
            raise ConfigError(f"training frames are {h}x{w}; square frames are expected")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
        h = w = size
    if augment:
        dev = gen.device

        def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return (lo + (hi - lo) * torch.rand(*shape, generator=gen, device=dev)).to(x.device)

        theta = torch.zeros(b * n, 2, 3, device=x.device)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        theta[:, :, 2] = u(-2 * cfg.shift, 2 * cfg.shift, b * n, 2)  # affine units: the side is 2
        grid = F.affine_grid(theta, [b * n, 3, h, w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = (x + u(-0.15, 0.15, b * n, 1, 1, 1)).clamp(0, 1)
        mean = _rgb_to_gray(x).mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * u(0.85, 1.15, b * n, 1, 1, 1) + mean).clamp(0, 1)
        gray = _rgb_to_gray(x)
        x = ((x - gray) * u(0.85, 1.15, b * n, 1, 1, 1) + gray).clamp(0, 1)
        x = torch.floor(x * 255.0 + 0.5) / 255.0  # back to uint8 levels, as the camera gives them
    x = (x * 2.0 - 1.0).reshape(b, n, 3, h, w)
    return [x[:, i] for i in range(n)]


def flow_targets(
    actions: torch.Tensor, gen: torch.Generator, beta_a: float = 1.5, beta_b: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, u): ε ~ N(0, I), t ~ Beta(a, b)·0.999 + 0.001, x_t = t·ε + (1−t)·a, u = ε − a."""
    b = actions.shape[0]
    eps = torch.randn(actions.shape, generator=gen, device=gen.device, dtype=torch.float32).to(actions.device)
    if beta_b == 1.0:  # Beta(a, 1) has CDF t^a: inverse-CDF sampling with the run's generator
        t = torch.rand(b, generator=gen, device=gen.device).to(actions.device) ** (1.0 / beta_a)
    else:
        t = torch.distributions.Beta(beta_a, beta_b).sample((b,)).to(actions.device)
    t = t * 0.999 + 0.001
    x_t = t[:, None, None] * eps + (1.0 - t[:, None, None]) * actions
    return x_t, t, eps - actions


def flow_loss(v: torch.Tensor, u: torch.Tensor, dims: int) -> torch.Tensor:
    """Mean squared error of the velocity over the robot's first `dims` action dims."""
    return F.mse_loss(v[..., :dims].float(), u[..., :dims].float())


def _sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Training attention through SDPA. A fully masked (pad) query row sees every key instead of none, so
    nothing turns NaN; pad rows are masked keys for every valid row, so no valid output changes."""
    m = mask | ~mask.any(-1, keepdim=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=m[:, None], scale=scale, enable_gqa=True)


# ---------------------------------------------------------------- training
def init_for_training(model: PI0, seed: int) -> None:
    """Upstream's starting point for a fresh model: PyTorch's default layers, (1 + w) norms at w = 0,
    zero adaRMS modulation (each expert block starts gated off), embeddings N(0, 1/width), SigLIP
    position embeddings N(0, 0.02²)."""
    torch.manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear | torch.nn.Conv2d | torch.nn.LayerNorm):
            mod.reset_parameters()
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, pi_model.RMSNorm):
                mod.weight.zero_()
            elif isinstance(mod, pi_model.AdaRMSNorm):
                mod.dense.weight.zero_()
                mod.dense.bias.zero_()
            elif isinstance(mod, torch.nn.Embedding):
                std = 0.02 if name.endswith("position_embedding") else mod.embedding_dim**-0.5
                mod.weight.normal_(0.0, std)


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    data: DemoData | None = None,
    model_cfg: PiConfig | None = None,
    command: str | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train a π policy by behaviour cloning and write it to `out_dir` in LeRobot's layout."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from omnimodel.archs.pi0.model import preset

    if cfg.steps < 1 or cfg.batch < 1:
        raise ConfigError("--steps and --batch must be at least 1")
    weight_dtype = _dtype(cfg.weight_dtype)
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    mcfg = model_cfg or preset(cfg.preset)
    if data is None:
        data = (
            demos.load_hdf5_demos(cfg.demos, mcfg.chunk)
            if cfg.demos
            else demos.generate_demos(demo_spec(cfg, mcfg.chunk), show_progress)
        )
    if data.actions.shape[1] != mcfg.chunk:
        raise ConfigError(f"the demos' chunks have {data.actions.shape[1]} steps, the model {mcfg.chunk}")
    t_data = time.perf_counter() - t_start
    log.info("training data: %d frames from %d episodes (%.1f s)", len(data), data.episodes, t_data)
    stats = dataset_stats(data)

    model = PI0(mcfg)
    init_for_training(model, cfg.seed)
    if cfg.init:
        start = ck.load_model(Path(cfg.init), torch.float32)
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as exc:
            raise ConfigError(
                f"--init {cfg.init}: weights do not fit preset {mcfg.name} ({str(exc).splitlines()[0]}); pass a checkpoint of that preset"
            ) from None
        log.info("initialised from %s", cfg.init)

    # The transforms the written checkpoint implies, read back from a checkpoint of the same layout.
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "ckpt"
        write_policy(model, probe, stats, torch.float32)
        from omnimodel.archs.pi0.policy import load_policy

        policy = load_policy(probe)
    ids_np, mask_np = frame_prompts(policy, data)
    act_np = norm_actions(policy, data.actions)
    dims = min(policy.spec.action_dim, ROBOT_ACTION_DIM)
    log.info("prompts up to %d tokens; state %s; actions %s", ids_np.shape[1], policy.spec.state_mode,
             policy.spec.action_mode)  # fmt: skip

    model.to(device).train()
    ids_t = torch.from_numpy(ids_np).to(device)
    mask_t = torch.from_numpy(mask_np).to(device)
    act_t = torch.from_numpy(act_np).to(device)
    images_t = torch.from_numpy(data.images)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        images_t = images_t.to(device) if images_t.numel() < 0.6 * free else images_t.pin_memory()
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    n_cam = data.images.shape[1]
    frame_rng = np.random.default_rng([cfg.seed, 2])
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    opt = adamw(model, cfg, device, ("norm", "embed"))
    ema = Ema(model, cfg.ema)
    use_amp = device.type == "cuda"
    planned_steps = cfg.steps
    log_rows: list[dict] = []
    acc: Any = 0.0
    n_acc = 0
    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())  # fmt: skip
    eager_attention = pi_model.attention
    pi_model.attention = _sdpa_attention
    t_train = time.perf_counter()
    try:
        with Progress(*columns, disable=not show_progress, transient=True) as bar:
            tid = bar.add_task("train", total=cfg.steps, info="")
            t_probe = time.perf_counter()
            for step in range(cfg.steps):
                idx_np = np.sort(frame_rng.choice(len(data), size=cfg.batch, replace=len(data) < cfg.batch))
                idx = torch.from_numpy(idx_np)
                idx_d = idx.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else idx
                imgs = (
                    images_t[idx_d]
                    if images_t.device == device
                    else images_t[idx].to(device, non_blocking=True)
                )
                cams = batch_images(imgs, gen, cfg, cfg.augment, mcfg.vision.image)
                cam_masks = [torch.ones(cfg.batch, dtype=torch.bool, device=device)] * n_cam
                x_t, t, u = flow_targets(act_t[idx_d], gen, cfg.beta_a, cfg.beta_b)
                lr = lr_at(step, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    v = model.joint_velocity(cams, cam_masks, ids_t[idx_d], mask_t[idx_d], None, x_t, t)
                loss = flow_loss(v, u, dims)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                ema.update(step)
                acc = acc + loss.detach()  # on the device: no host sync per step
                n_acc += 1
                if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                    row = {"step": step + 1, "lr": lr, "loss": float(acc) / n_acc,
                           "seconds": round(time.perf_counter() - t_train, 2)}  # fmt: skip
                    log_rows.append(row)
                    log.info("step %d flow loss %.5f", row["step"], row["loss"])
                    acc, n_acc = 0.0, 0
                    bar.update(tid, info=f"loss {row['loss']:.4f}")
                bar.advance(tid)
                if cfg.time_budget > 0 and step + 1 == 60:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    per_step = (time.perf_counter() - t_probe) / 40
                    fit = int((cfg.time_budget - (time.perf_counter() - t_train)) / per_step) + 60
                    if fit < cfg.steps:
                        cfg.steps = max(fit, min(cfg.warmup + 100, cfg.steps), 61)
                        bar.update(tid, total=cfg.steps)
                        log.warning("%.1f ms/step: %d steps fit the %.0f s budget (planned %d)", 1e3 * per_step,
                                    cfg.steps, cfg.time_budget, planned_steps)  # fmt: skip
                if step + 1 == 20:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t_probe = time.perf_counter()
                if step + 1 >= cfg.steps:
                    break
    finally:
        pi_model.attention = eager_attention

    ema.copy_to_model()
    model.eval().cpu().float()
    out_dir = Path(out_dir)
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
        "prompt_tokens_max": int(ids_np.shape[1]),
    }
    with atomic_dir(out_dir) as tmp:
        write_policy(model, tmp, stats, weight_dtype)
        (tmp / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log_rows))
        _training_md(tmp / "TRAINING.md", cfg, log_rows, summary, command, None)
    check_prompts(out_dir, data, ids_np, mask_np)
    result = TrainResult(out_dir, log_rows, len(data), data.episodes, time.perf_counter() - t_start)
    if cfg.eval_episodes > 0:
        result.eval = evaluate(out_dir, cfg.eval_episodes, cfg.seed, device, cfg.suites, show_progress)
        with atomic_path(out_dir / "TRAINING.md") as tmp:
            _training_md(tmp, cfg, log_rows, summary, command, result.eval)
    return result


def write_policy(model: PI0, out: Path, stats: ck.Stats, dtype: torch.dtype) -> None:
    """The LeRobot layout of `model` with these statistics and the preset's character tokenizer, into `out`."""
    from omnimodel.archs.pi0.tokenizer import build_char_tokenizer, save_tokenizer_files

    tok = build_char_tokenizer(model.cfg.vocab)
    out.mkdir(parents=True, exist_ok=True)
    ck.write_checkpoint(
        model, out, stats, lambda d: save_tokenizer_files(tok, d, model.cfg.max_token_len), dtype
    )


def check_prompts(ckpt: Path, data: DemoData, ids: np.ndarray, mask: np.ndarray, n: int = 64) -> None:
    """The written checkpoint's policy builds the prompts training used (a sample of frames); else ConfigError."""
    from omnimodel.archs.pi0.policy import load_policy

    policy = load_policy(ckpt)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(data), size=min(n, len(data)), replace=False):
        inp = policy.prepare(list(data.images[i]), data.proprio[i], data.instructions[data.task[i]])
        want = inp.tokens[0].numpy()[: ids.shape[1]]
        if not np.array_equal(want, ids[i]) or int(inp.token_mask.sum()) != int(mask[i].sum()):
            raise ConfigError(
                f"frame {i}: the trained prompt differs from the policy's; report this as a bug"
            )


def _training_md(
    path: Path, cfg: TrainConfig, log_rows: list[dict], summary: dict, command: str | None, ev: dict | None
) -> None:
    lines = [
        "# Training record",
        "",
        "Behaviour cloning of π0.5 / π0 on the omnimodel task suite with the flow-matching loss"
        " (x_t = t·ε + (1−t)·a, target ε − a, t ~ Beta(1.5, 1)·0.999 + 0.001), written by `omnimodel train`.",
        "",
    ]
    lines += record_sections(cfg, summary, command, "(called from Python: omnimodel.archs.pi0.train.train)")
    if log_rows:
        lines += ["## Loss", "", "| step | flow loss |", "|---:|---:|"]
        lines += [f"| {r['step']} | {r['loss']:.5f} |" for r in (log_rows[0], log_rows[-1])]
        lines += ["", "Every logged step is in train_log.jsonl.", ""]
    lines += eval_section(ev)
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- eval through omnimodel.eval
def load_device_policy(ckpt: str | Path, device: torch.device):
    """The checkpoint's TorchPolicy with its model on `device` (inputs follow it there)."""
    from omnimodel.archs.pi0.policy import PolicyInputs, TorchPolicy, load_policy

    base = load_policy(ckpt)
    if device.type == "cpu":
        return base

    class DevicePolicy(TorchPolicy):
        """A TorchPolicy whose inputs follow the model onto the accelerator."""

        def prepare(self, images, state, instruction) -> PolicyInputs:
            inp = super().prepare(images, state, instruction)
            return PolicyInputs([i.to(device) for i in inp.images], [m.to(device) for m in inp.image_masks],
                                inp.tokens.to(device), inp.token_mask.to(device),
                                None if inp.state is None else inp.state.to(device))  # fmt: skip

    return DevicePolicy(base.model.to(device), base.tokenizer, base.stats, base.spec)


def evaluate(
    ckpt: Path, episodes_per_task: int, seed: int, device: torch.device, suites, show_progress: bool = True
) -> dict[str, Any]:
    """Closed-loop success of the written checkpoint with omnimodel.eval; writes eval.json beside it."""
    from omnimodel import eval as ev

    policy = load_device_policy(ckpt, device)
    result = ev.evaluate_target(ckpt, policy, f"pytorch-{device.type}", 32.0, ev.suite_eval_tasks(list(suites)),
                                episodes_per_task, seed, show_progress=show_progress)  # fmt: skip
    ev.write_json(result, Path(ckpt) / "eval.json")
    return result
