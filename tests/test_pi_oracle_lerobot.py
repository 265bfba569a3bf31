"""π0 / π0.5 tiny presets against the upstream oracle: LeRobot 0.6.1 PI0Policy / PI05Policy, fp32, CPU.

Both directions: `omnimodel zoo make` writes a checkpoint that LeRobot and ours load (its config.json
holds only keys LeRobot's configs know); LeRobot's own save_pretrained (+ its processor files) writes
one that ours loads (the only test of LeRobot-saved -> ours). LeRobot runs in its own venv
(built once by tests/oracles/build_lerobot_venv.py, driven by tests/oracles/lerobot_pi.py); both
sides run sample_actions on the same observation and noise. Compared: prefix embeddings, one
denoise-step velocity at t=1 and the 10-step action chunk, by cosine and max abs difference.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require
from safetensors.numpy import load_file

from omnimodel import archs
from omnimodel.archs.pi0 import checkpoint as ck
from omnimodel.archs.pi0.model import PRESETS

REPO = Path(__file__).resolve().parents[1]
ORACLES = REPO / "tests" / "oracles"
COS_MIN, MAX_ABS = 0.9999, 1e-4

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    preset: str
    arch: str


CASES = [Case("pi05-tiny", "pi05"), Case("pi0-tiny", "pi0")]


@pytest.fixture(scope="session")
def lerobot_python() -> Path:
    """The oracle venv's python (built on first use, a few minutes; reused after)."""
    sys.path.insert(0, str(ORACLES))
    try:
        import build_lerobot_venv
    finally:
        sys.path.remove(str(ORACLES))
    try:
        return build_lerobot_venv.build()
    except build_lerobot_venv.BuildError as exc:
        require(False, f"the LeRobot 0.6.1 oracle venv ({exc})")


def _omnimodel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omnimodel.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def _write_inputs(path: Path, cfg, seed: int = 0) -> None:
    """Two real cameras and a masked third, 2/3 of the text valid, a state, fixed noise."""
    rng = np.random.default_rng(seed)
    n_cam, size, length = cfg.num_cameras, cfg.vision.image, cfg.max_token_len
    token_mask = np.arange(length)[None] < (2 * length) // 3
    np.savez(
        path,
        images=rng.uniform(-1, 1, (1, n_cam, 3, size, size)).astype(np.float32),
        image_masks=np.array([[True] * (n_cam - 1) + [False]]),
        tokens=np.where(token_mask, rng.integers(1, cfg.vocab, (1, length)), 0).astype(np.int64),
        token_mask=token_mask,
        state=(0.5 * rng.standard_normal((1, cfg.state_dim))).astype(np.float32),
        noise=rng.standard_normal((1, cfg.chunk, cfg.action_dim)).astype(np.float32),
    )


def _ours(ckpt: Path, arch: str, inputs: Path) -> dict[str, np.ndarray]:
    """Our reference model on the same inputs: prefix embeddings, v at t=1, the action chunk."""
    model = archs.get(arch).load_model(ckpt)
    d = {k: torch.from_numpy(v) for k, v in np.load(inputs).items()}
    images, masks = list(d["images"].unbind(1)), list(d["image_masks"].unbind(1))
    state = d["state"] if arch == "pi0" else None
    with torch.no_grad():
        prefix, _, _ = model.embed_prefix(images, masks, d["tokens"], d["token_mask"])
        cache = model.prefix_pass(images, masks, d["tokens"], d["token_mask"])
        v_t1 = model.denoise_step(cache, state, d["noise"].clone(), torch.ones(1))
        actions = model.sample_actions(images, masks, d["tokens"], d["token_mask"], state, d["noise"].clone())
    return {"prefix_embs": prefix.numpy(), "v_t1": v_t1.numpy(), "actions": actions.numpy()}


def _metrics(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    a, b = ours.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), float(np.abs(a - b).max())


@pytest.mark.parametrize("case", CASES, ids=[c.preset for c in CASES])
def test_tiny_matches_lerobot(case: Case, lerobot_python: Path, tmp_path: Path) -> None:
    """A `zoo make` dir, loaded unmodified by LeRobot and by ours, gives the same numbers."""
    ckpt, inputs, out = tmp_path / case.preset, tmp_path / "in.npz", tmp_path / "lerobot.npz"
    made = _omnimodel("zoo", "make", case.preset, str(ckpt))
    assert made.returncode == 0, made.stderr[-2000:]
    cfg = archs.get(case.arch).read_config(ckpt)
    _write_inputs(inputs, cfg)

    cmd = [str(lerobot_python), str(ORACLES / "lerobot_pi.py"), "run", str(ckpt), str(inputs), str(out)]
    ran = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0 and out.exists(), f"LeRobot oracle failed on {ckpt}:\n{ran.stderr[-3000:]}"
    ref = dict(np.load(out))
    _assert_close(case.preset, _ours(ckpt, case.arch, inputs), ref)


def test_zoo_config_json_has_only_lerobot_fields(lerobot_python: Path, tmp_path: Path) -> None:
    """Stock LeRobot (draccus) refuses unknown config.json keys: every preset's uses only PI0Config / PI05Config's."""
    dirs = {}
    for case in CASES:  # the tiny presets as `zoo make` writes them
        dirs[case.preset] = tmp_path / case.preset
        made = _omnimodel("zoo", "make", case.preset, str(dirs[case.preset]))
        assert made.returncode == 0, made.stderr[-2000:]
        assert (dirs[case.preset] / ck.SIDE_FILE).is_file()
    for name in ("pi05", "pi0"):  # the full-size ones: the same config.json, without 6.7 GB of weights
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "config.json").write_text(json.dumps(ck.config_to_json(PRESETS[name])))
    cmd = [str(lerobot_python), str(ORACLES / "lerobot_pi.py"), "config-fields", *map(str, dirs.values())]
    ran = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, f"LeRobot refuses a preset's config.json:\n{ran.stderr[-3000:]}"
    known = json.loads(ran.stdout.strip().splitlines()[-1])
    for name, path in dirs.items():
        raw = json.loads((path / "config.json").read_text())
        unknown = sorted(set(raw) - set(known[raw["type"]]))
        assert not unknown, f"{name}: config.json keys LeRobot 0.6.1's {raw['type']} refuses: {unknown}"


def _assert_close(label: str, ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """Every compared tensor within COS_MIN / MAX_ABS; prints each observed value, fails naming the misses."""
    failures = []
    for name in ("prefix_embs", "v_t1", "actions"):
        assert ours[name].shape == ref[name].shape, (
            f"{name}: ours {ours[name].shape} vs LeRobot {ref[name].shape}"
        )
        cos, max_abs = _metrics(ours[name], ref[name])
        line = f"{label} {name}: cosine {cos:.8f} (>= {COS_MIN}), max abs {max_abs:.3e} (<= {MAX_ABS:g})"
        print(line)
        if cos < COS_MIN or max_abs > MAX_ABS:
            failures.append(line)
    assert not failures, "vs LeRobot 0.6.1:\n" + "\n".join(failures)


@pytest.mark.parametrize("case", CASES, ids=[c.preset for c in CASES])
def test_lerobot_written_tiny_matches_ours(case: Case, lerobot_python: Path, tmp_path: Path) -> None:
    """A dir from LeRobot's save_pretrained + processors loads in ours: weights, statistics, outputs."""
    ckpt, out = tmp_path / case.arch, tmp_path / "lerobot.npz"
    inputs = tmp_path / f"{case.arch}_inputs.npz"  # written by make-tiny beside the dir
    oracle = [str(lerobot_python), str(ORACLES / "lerobot_pi.py")]
    for args in (
        ["make-tiny", case.arch, str(ckpt)],
        ["run", str(ckpt), str(inputs), str(out), "--sizes", "tiny"],
    ):
        ran = subprocess.run([*oracle, *args], capture_output=True, text=True, timeout=900)
        assert ran.returncode == 0, f"LeRobot oracle {args[0]} failed:\n{ran.stderr[-3000:]}"
    ref = dict(np.load(out))

    # LeRobot's config names only the released Gemma variants; the tiny sizes go in omnimodel.json beside it.
    ours_dir = tmp_path / f"{case.arch}-ours"
    shutil.copytree(ckpt, ours_dir)
    side = {"omnimodel_sizes": ck.side_to_json(PRESETS[case.preset])["omnimodel_sizes"]}
    (ours_dir / ck.SIDE_FILE).write_text(json.dumps(side))
    _assert_close(f"LeRobot-written {case.preset}", _ours(ours_dir, case.arch, inputs), ref)

    (state_file,) = ckpt.glob("policy_preprocessor_step_*_normalizer_processor.safetensors")
    theirs, stats = load_file(str(state_file)), ck.read_stats(ours_dir)
    for part, feature in (("state", "observation.state"), ("action", "action")):
        for stat, values in getattr(stats, part).items():
            np.testing.assert_allclose(
                values, theirs[f"{feature}.{stat}"], rtol=0, atol=0, err_msg=f"{feature}.{stat}"
            )
    assert set(stats.state) == {"mean", "std", "min", "max", "q01", "q99"}, sorted(stats.state)
