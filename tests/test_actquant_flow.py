"""ActQuant on a flow-matching policy (π0.5 tiny): the arch's calibration hooks, the flow loss as the
Fisher's action term with fixed noise, HSIC against the hooks' action output, dead tensors out of the
budget, `port --quant actquant:3.0` end to end, and no arch module path in the plugin.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from omnimodel import archs

CPU = torch.device("cpu")
FRAMES = 4


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """One expert episode per task of one suite (the calibration rule needs one per task)."""
    from omnimodel.suite.export import export_suites

    root = tmp_path_factory.mktemp("flow_demos")
    export_suites(root, 1, 0, ["libero_spatial"])
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return archs.get("pi05").make_checkpoint("pi05-tiny", tmp_path_factory.mktemp("pi05") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def model(ckpt):
    torch.manual_seed(0)
    return archs.get("pi05").load_model(ckpt).eval()


@pytest.fixture(scope="module")
def hooks():
    return archs.get("pi05").quant_calibration()


@pytest.fixture(scope="module")
def calib(hooks, model, ckpt, demos):
    return hooks.calibration_set(demos, model.cfg, ckpt, None, FRAMES, 0)


def test_calibration_set_fixes_noise_and_time_per_frame(hooks, model, ckpt, demos, calib):
    again = hooks.calibration_set(demos, model.cfg, ckpt, None, FRAMES, 0)
    assert np.array_equal(calib.noise, again.noise) and np.array_equal(calib.time, again.time)
    assert calib.noise.shape == (FRAMES, model.cfg.chunk, model.cfg.action_dim)
    assert np.all((calib.time > 0.001 - 1e-7) & (calib.time <= 1.0))
    assert len(set(calib.time.tolist())) == FRAMES  # each frame its own draw
    # actions: normalised over the robot's 7 dims, zero padding beyond
    assert calib.robot_dim == 7 and not calib.actions[..., 7:].any() and calib.actions[..., :7].any()
    other = hooks.calibration_set(demos, model.cfg, ckpt, None, FRAMES, 1)
    assert not np.array_equal(calib.noise, other.noise)


def test_flow_loss_matches_a_hand_computation(hooks, model, calib):
    eps = np.random.default_rng(5).standard_normal(calib.noise[:1].shape).astype(np.float32)
    t = np.float32(0.3)
    fixed = hooks.subset(calib, np.array([0]))
    fixed.noise, fixed.time = eps, np.array([t], np.float32)
    with torch.no_grad():
        act, aux = hooks.loss(model, fixed, [0], CPU, torch.float32, with_aux=True)
        a = torch.from_numpy(fixed.actions[:1])
        x_t = float(t) * torch.from_numpy(eps) + (1.0 - float(t)) * a
        v = model.joint_velocity(**fixed.inputs([0], CPU, torch.float32), x_t=x_t, t=torch.tensor([t]))
    want = ((v - (torch.from_numpy(eps) - a))[..., :7] ** 2).mean()
    assert aux is None  # no action-token head: lambda = 1
    assert torch.allclose(act, want, rtol=1e-6, atol=0), (float(act), float(want))
    # the padded dims do not count
    assert not torch.allclose(act, ((v - (torch.from_numpy(eps) - a)) ** 2).mean())


def test_fisher_is_deterministic_and_the_action_term_only(hooks, model, ckpt, demos, calib):
    from actquant_plugin.fisher import fisher_diagonal
    from actquant_plugin.plugin import ActQuant, ActQuantOptions

    assert ActQuant(ActQuantOptions(lam=0.5))._lam(model, hooks) == 1.0
    names = [
        "paligemma_with_expert.gemma_expert.model.layers.0.mlp.down_proj.weight",
        "paligemma_with_expert.paligemma.model.language_model.layers.1.self_attn.q_proj.weight",
    ]
    params = dict(model.named_parameters())
    pick = {n: params[n] for n in names}
    f1 = fisher_diagonal(model, calib, pick, 1.0, CPU, torch.float32, hooks=hooks)
    again = hooks.calibration_set(demos, model.cfg, ckpt, None, FRAMES, 0)
    f2 = fisher_diagonal(model, again, pick, 1.0, CPU, torch.float32, hooks=hooks)
    for n in names:
        assert f1[n].abs().sum() > 0, n
        assert torch.equal(f1[n], f2[n]), n


def test_hsic_targets_come_from_the_arch_hooks(hooks, model, ckpt, calib):
    from actquant_plugin.plugin import ActQuant
    from actquant_plugin.targets import find_targets
    from omnimodel.ggufio.convert import gguf_tensors
    from omnimodel.ggufio.names import is_quantizable

    arch = archs.get("pi05")
    tensors = {
        n: w
        for n, w in gguf_tensors(arch.read_state_dict(ckpt), arch).items()
        if is_quantizable(n, tuple(w.shape), arch)
    }
    targets = find_targets(model, tensors, model.cfg, tower_of=hooks.tower_of)
    assert {t.tower for t in targets.values()} == {"v", "llm", "aex"} == set(hooks.tower_inputs())
    assert all(t.tower == "aex" for n, t in targets.items() if n.startswith("aex."))
    seen = []

    class Recording(type(hooks)):
        def action_output(self, model, calib, i, device, dtype):
            out = super().action_output(model, calib, i, device, dtype)
            seen.append(out)
            return out

    class Constant(type(hooks)):
        def action_output(self, model, calib, i, device, dtype):
            super().action_output(model, calib, i, device, dtype)
            return torch.ones(1, 7 * model.cfg.chunk)

    q = ActQuant()
    terms = q._hsic_terms(model, calib, targets, CPU, torch.float32, Recording(arch), {}, {})
    assert len(seen) == FRAMES and seen[0].shape == (1, 7 * model.cfg.chunk)
    assert any(ha > 0 for _, ha, _ in terms.values())
    flat = q._hsic_terms(model, calib, targets, CPU, torch.float32, Constant(arch), {}, {})
    assert all(ha == 0.0 for _, ha, _ in flat.values())  # A constant: no action information anywhere
    assert [hx for hx, _, _ in flat.values()] == [hx for hx, _, _ in terms.values()]
    # the option overrides the arch's choice: against the ground-truth chunks the A terms change, X's do not
    from actquant_plugin.plugin import ActQuantOptions

    truth = ActQuant(ActQuantOptions(hsic_target="truth"))._hsic_terms(
        model, calib, targets, CPU, torch.float32, hooks, {}, {}
    )
    assert [v[0] for v in truth.values()] == [v[0] for v in terms.values()]
    assert [v[1] for v in truth.values()] != [v[1] for v in terms.values()]


def test_dead_tensors_stay_out_of_the_budget(calib, tmp_path):
    from actquant_plugin.allocate import TYPE_BITS
    from actquant_plugin.plugin import ActQuant, ActQuantOptions
    from omnimodel.ggufio.convert import gguf_tensors, load_source
    from omnimodel.ggufio.names import is_quantizable
    from omnimodel.quant.plugin import QuantContext

    src = load_source("pi05-tiny")  # a preset's state dict still holds the last LLM layer's q/o/MLP
    hooks = src.arch.quant_calibration()
    last = src.config.llm.depth - 1
    dead = {f"blk.{last}.attn_q.weight", f"blk.{last}.attn_output.weight", f"blk.{last}.ffn_up.weight"}
    assert dead <= hooks.dead_tensors([*dead, "blk.0.attn_q.weight", f"blk.{last}.attn_k.weight"], src.config)
    assert f"blk.{last}.attn_k.weight" not in hooks.dead_tensors([f"blk.{last}.attn_k.weight"], src.config)
    tensors = {
        n: w
        for n, w in gguf_tensors(src.state_dict, src.arch).items()
        if is_quantizable(n, tuple(w.shape), src.arch)
    }
    assert dead <= set(tensors)
    # the types and the budget only: magnitude-weighted scales (no Fisher pass), the table at the base type
    q = ActQuant(
        ActQuantOptions(bpw=3.0, objective="magnitude", embed="base", report=str(tmp_path / "q.json"))
    )
    plans = q.plan(tensors, QuantContext(model=src.model, calibration=calib, budget_bpw=3.0))
    rep = json.loads((tmp_path / "q.json").read_text())
    assert dead <= set(rep["dead"]) and set(plans) == set(tensors)
    assert not set(rep["dead"]) & set(rep["tensors"])  # not in the allocation problem
    cheapest = min(TYPE_BITS[t] for t in rep["options"]["candidates"])
    assert all(TYPE_BITS[plans[n].ggml_type] <= cheapest + 1e-9 for n in rep["dead"])
    live = [n for n in tensors if n not in rep["dead"]]
    bits = sum(TYPE_BITS[plans[n].ggml_type] * tensors[n].numel() for n in live) / sum(
        tensors[n].numel() for n in live
    )
    assert rep["planned_bpw"] == pytest.approx(bits) and bits <= 3.0 + 1e-6
    assert set(rep["timings"]) >= {"calibration", "calibration_forward", "hsic", "allocate"}
    assert rep["calibration"]["hsic_target"] == "output" and rep["options"]["lam_effective"] == 1.0


def test_port_pi05_actquant_end_to_end(ckpt, demos, tmp_path):
    from conftest import require
    from test_arch_pi_port import _cli

    from omnimodel.sandbox import get_sandbox

    try:
        get_sandbox("auto")
    except Exception as exc:  # noqa: BLE001 - no sandbox: the port cannot build
        require(False, f"a sandbox to build the generated C++ ({exc})")
    run = tmp_path / "run"
    res = _cli("port", "pi05", "--checkpoint", str(ckpt), "--quant", "actquant:3.0", "--calib", str(demos),
               "--calib-frames", str(FRAMES), "--run-dir", str(run), cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, f"port pi05 actquant: {res.stdout[-2000:]} {res.stderr[-3000:]}"
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "ok"
    assert report["gguf"]["bpw"] <= 3.0 + 0.02, report["gguf"]
    quant = report["quantizer"]
    assert quant["method"] == "actquant" and quant["calibration"]["frames"] == FRAMES
    assert set(quant["timings"]) >= {
        "calibration_set",
        "calibration_forward",
        "hsic",
        "allocate",
        "fisher",
        "quantize",
    }
    assert quant["memory"]["total"]["rss_gb"] > 0


def test_the_plugin_names_no_arch_module():
    """The plugin finds everything arch-specific through the hooks: no arch package path, no arch word."""
    root = Path(__file__).resolve().parent.parent / "actquant_plugin"
    word = re.compile(
        r"(?<![A-Za-z0-9_])(?:openvla[-_]oft|openvla|oft|pi0(?:\.5|5)?|π0(?:\.5)?|paligemma)(?![A-Za-z0-9_])",
        re.I,
    )
    hits = []
    for path in sorted(root.glob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "omnimodel.archs." in line or word.search(line):
                hits.append(f"{path.name}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_pi0_state_token_path(demos, tmp_path):
    """π0 (state token, mean/std statistics) goes through the same hooks: the loss is the flow loss on its chunk."""
    arch = archs.get("pi0")
    ckpt = arch.make_checkpoint("pi0-tiny", tmp_path / "ckpt", seed=0)
    model = arch.load_model(ckpt).eval()
    hooks = arch.quant_calibration()
    cs = hooks.calibration_set(demos, model.cfg, ckpt, None, 2, 0)
    assert cs.noise.shape == (2, model.cfg.chunk, model.cfg.action_dim)
    assert cs.inputs([0, 1], CPU, torch.float32)["state"].shape == (2, model.cfg.state_dim)
    act, aux = hooks.loss(model, cs, [0, 1], CPU, torch.float32, with_aux=False)
    assert aux is None and torch.isfinite(act) and act > 0
