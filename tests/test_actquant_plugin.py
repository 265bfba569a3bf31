"""The actquant plugin end to end on the tiny preset with calibration data from the task suite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import require

from actquant_plugin.allocate import TYPE_BITS, available_candidates
from actquant_plugin.baselines import mix_types
from actquant_plugin.plugin import ActQuant, ActQuantOptions
from actquant_plugin.scales import supports
from omnimodel.errors import QuantError
from omnimodel.ggufio.convert import convert, load_source
from omnimodel.quant.plugin import load_quantizer


@pytest.fixture(autouse=True)
def _one_thread():
    # the CI box has 2 cores shared by many processes: one thread is ~8x faster than two here
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from omnimodel.suite import suite_tasks
    from omnimodel.suite.export import export_task

    root = tmp_path_factory.mktemp("aq_demos")
    for idx in (0, 3, 5):
        task = suite_tasks("libero_goal")[idx]
        export_task(task, idx, root / "libero_goal" / f"{task.name}_demo.hdf5", episodes=1, seed=3)
    return root


@pytest.fixture(scope="module")
def tiny():
    return load_source("openvla-oft-tiny")


@pytest.fixture(scope="module")
def calib(demos, tiny):
    return tiny.arch.quant_calibration().calibration_set(demos, tiny.config, frames=10)


def _budgets():
    return [pytest.param(b, id=f"{b}bpw") for b in (2.5, 3.0, 3.5, 4.0)]


@pytest.mark.parametrize("budget", _budgets())
def test_written_gguf_meets_the_budget(budget, tiny, calib, tmp_path):
    low = min(TYPE_BITS[t] for t in available_candidates())
    require(budget >= low, f"an encoder for a type below {budget} bpw (IQ2 lattice types; have {available_candidates()})")
    q = ActQuant(ActQuantOptions(bpw=budget, objective="none", device="cpu"))
    res = convert(tiny, tmp_path / "m.gguf", q, calibration=calib)
    print(f"budget {budget}: written {res.bpw:.4f} bpw, planned {q.report.planned_bpw:.4f}")
    assert abs(res.bpw - budget) <= 0.02
    assert res.bpw <= budget + 1e-9
    assert q.report.planned_bpw == pytest.approx(res.bpw, abs=1e-9)
    assert not res.fallbacks


def test_amf_plan_report_and_bytes(tiny, calib, tmp_path):
    report = tmp_path / "quant_report.json"
    q = load_quantizer(f"actquant:3.0,device=cpu,report={report}")
    res = convert(tiny, tmp_path / "m.gguf", q, calibration=calib)
    assert abs(res.bpw - 3.0) <= 0.02
    data = json.loads(report.read_text())
    assert set(data["timings"]) >= {"hsic", "allocate", "fisher", "scales"}
    assert data["options"]["objective"] == "amf" and data["options"]["lam_effective"] == 0.5
    assert data["options"]["bandwidth_effective"] == "median"  # bandwidth=auto on the paper preset
    rows = data["tensors"]
    assert set(rows) <= set(res.types) and all(r["type"] == res.types[n] for n, r in rows.items())
    targets = {n: r for n, r in rows.items() if r["hsic_x"] is not None}
    assert any(n.startswith("v.") for n in targets) and any(n.startswith("blk.") for n in targets)
    for name, r in targets.items():
        assert r["type"] == res.types[name]
        assert r["hsic_a"] is not None and r["predicted_error"] is not None
        if supports(r["type"]):  # K-quants and IQ4: Eq. 11 alternation
            assert r["scales"] == "alternation"
            assert r["achieved_error"] <= r["achieved_error_init"] * (1 + 1e-9)
        else:  # lattice types: F * sqrt(sigma^2 + w^2) goes to the lattice encoder as importance
            assert r["scales"] == "importance"
    assert rows["token_embd.weight"]["hsic_x"] is None
    # embed=fisher (default): the token table's sensitivity is kappa * its Fisher energy, kappa the
    # median s_l / E_l over the LLM matrices, and the solver prices it like any matrix.
    emb = data["embed"]
    assert emb["rule"] == "fisher" and emb["energy"] > 0
    ratios = [r["sensitivity"] / r["fisher_energy"] for n, r in rows.items()
              if n.startswith("blk.") and r["fisher_energy"] and r["sensitivity"] > 0]  # fmt: skip
    assert emb["matrices"] == len(ratios) >= 10
    assert emb["kappa"] == pytest.approx(float(np.median(ratios)), rel=1e-9)
    tok = rows["token_embd.weight"]
    assert tok["fisher_energy"] == pytest.approx(emb["energy"])
    assert tok["sensitivity"] == pytest.approx(emb["kappa"] * emb["energy"], rel=1e-9)
    assert tok["predicted_error"] == pytest.approx(tok["sensitivity"] * 2.0 ** (-2 * TYPE_BITS[tok["type"]]))
    assert rows["output.weight"]["fisher_energy"] is None
    # the matrices the action never reads (the LM head; the tower blocks after the feature layer, which
    # no calibration pass reaches) take IQ1_S at any budget; at 3.0 no other matrix is below 2 bits
    unread = set(data["unread"])
    assert "output.weight" in unread and {n for n in unread if n.startswith(("v.", "v2."))}
    assert all(rows[n]["type"] == "IQ1_S" and rows[n]["hsic_x"] is None for n in unread)
    assert all(TYPE_BITS[r["type"]] >= 2.0625 for n, r in rows.items() if n not in unread)
    assert "IQ1_S" not in data["options"]["candidates"]
    assert "embed_fisher" in data["timings"]


def test_iq1_types_join_below_two_bits(tiny, calib, tmp_path):
    # budget 2.0 is below every 2-bit type (IQ2_XXS: 2.0625): with iq1=auto the ternary types join
    # the candidates, the budget is met, and the matrices OFT never runs (s = 0) take IQ1_S
    q = ActQuant(ActQuantOptions(bpw=2.0, objective="none", device="cpu"))
    res = convert(tiny, tmp_path / "m.gguf", q, calibration=calib)
    assert abs(res.bpw - 2.0) <= 0.02 and res.bpw <= 2.0 + 1e-9
    assert {"IQ1_S", "IQ1_M"} <= set(q.report.options["candidates"])
    rows = q.report.tensors
    zero = [n for n, r in rows.items() if r.sensitivity == 0]
    assert "output.weight" in zero and all(res.types[n] == "IQ1_S" for n in zero)
    assert set(q.report.unread) <= set(zero)
    assert any(TYPE_BITS[res.types[n]] > 2.0625 for n in rows), "the bits saved buy upgrades elsewhere"
    # the most sensitive matrix is never below the least sensitive one
    by_s = sorted((r.sensitivity, TYPE_BITS[r.type]) for n, r in rows.items() if n.startswith("blk."))
    assert by_s[-1][1] >= by_s[0][1]
    # iq1=off: the 2-bit floor, budget infeasible, every matrix at IQ2_XXS
    q = ActQuant(ActQuantOptions(bpw=2.0, objective="none", device="cpu", iq1="off"))
    res = convert(tiny, tmp_path / "off.gguf", q, calibration=calib)
    assert set(res.types[n] for n in q.report.tensors) == {"IQ2_XXS"}
    assert not {"IQ1_S", "IQ1_M"} & set(q.report.options["candidates"])
    # iq1=off also keeps the unread matrices at the 2-bit floor
    assert q.report.unread == [] and res.types["output.weight"] == "IQ2_XXS"
    # auto: every matrix may take an IQ1 type only below IQ2_XS; on: at any budget
    assert "IQ1_S" not in ActQuant(ActQuantOptions(bpw=2.5)).candidates(2.5)
    assert "IQ1_S" in ActQuant(ActQuantOptions(iq1="on")).candidates(2.5)
    assert "IQ1_S" not in ActQuant(ActQuantOptions(preset="authors")).candidates(2.0)


def test_fisher_energy_is_the_row_sum_of_fisher_times_w2():
    from actquant_plugin.calibration import random_set
    from actquant_plugin.fisher import fisher_diagonal, fisher_energy
    from omnimodel.archs.openvla_oft.model import STOP_INDEX, OpenVLAOFT, preset

    torch.manual_seed(0)

    cfg = preset("openvla-oft-tiny")
    model = OpenVLAOFT(cfg).eval()
    cs = random_set(cfg, 3, seed=1)
    params = dict(model.named_parameters())
    pick = {k: params[k] for k in ("language_model.model.embed_tokens.weight", "language_model.model.layers.0.mlp.up_proj.weight")}
    cpu = torch.device("cpu")
    f = fisher_diagonal(model, cs, pick, 0.5, cpu, torch.float32)
    e = fisher_energy(model, cs, pick, 0.5, cpu, torch.float32)
    for k, p in pick.items():
        want = (f[k] * p.detach() ** 2).sum(1)
        assert e[k].shape == (p.shape[0],)
        assert torch.allclose(e[k], want, rtol=1e-4, atol=1e-12) and float(want.sum()) > 0
    # only the prompt's tokens and the stop token get gradient: the other rows have zero energy
    used = {t for p in cs.prompts for t in p} | {STOP_INDEX}
    unused = [r for r in range(pick["language_model.model.embed_tokens.weight"].shape[0]) if r not in used]
    assert float(e["language_model.model.embed_tokens.weight"][unused].abs().max()) == 0.0
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_embed_rules_base_and_budget(tiny, calib, tmp_path):
    base = ActQuant(ActQuantOptions(bpw=3.0, objective="none", embed="base", device="cpu"))
    convert(tiny, tmp_path / "b.gguf", base, calibration=calib)
    assert base.report.embed == {"rule": "base"} and base.report.tensors["token_embd.weight"].type == "IQ2_XXS"
    assert "token_embd.weight" not in base.report.unread  # the table is read: base type, not IQ1_S
    assert "embed_fisher" not in base.report.timings
    budget = ActQuant(ActQuantOptions(bpw=3.0, objective="none", embed="budget", device="cpu"))
    convert(tiny, tmp_path / "u.gguf", budget, calibration=calib)
    assert budget.report.tensors["token_embd.weight"].type == "Q2_K"  # the dearest type at or under 3.0
    authors = ActQuant(ActQuantOptions(bpw=3.0, objective="none", preset="authors", device="cpu"))
    assert authors.embed_rule() == "base"


def test_uniform_allocation_ablation(tiny, calib, tmp_path):
    q = ActQuant(ActQuantOptions(bpw=3.0, allocation="uniform", objective="magnitude", device="cpu"))
    res = convert(tiny, tmp_path / "m.gguf", q, calibration=calib)
    # Every target matrix gets the one type; the token table and LM head stay at the cheapest type (spec).
    fixed = ("token_embd.weight", "output.weight")
    assert set(res.types[n] for n in q.report.tensors if n not in fixed) == {"Q2_K"}
    assert {res.types[n] for n in fixed if n in q.report.tensors} <= {"IQ2_XXS"}
    assert all(r["hsic_x"] is None for r in q.report.to_json()["tensors"].values())
    assert q.report.unread == []  # no HSIC pass, so nothing is known to be unread


def test_measured_error_model(tiny, calib, tmp_path):
    q = ActQuant(ActQuantOptions(bpw=3.0, objective="none", error_model="measured", error_rows=16, device="cpu"))
    res = convert(tiny, tmp_path / "m.gguf", q, calibration=calib)
    assert abs(res.bpw - 3.0) <= 0.02 and res.bpw <= 3.0 + 1e-9
    measured = {n: r for n, r in q.report.to_json()["tensors"].items() if r["measured_rel"]}
    assert len(measured) >= 20
    for r in measured.values():
        rel = r["measured_rel"]
        assert r["type"] in rel and r["predicted_error"] == pytest.approx(r["sensitivity"] * rel[r["type"]])
        assert rel[min(rel, key=TYPE_BITS.__getitem__)] > rel[max(rel, key=TYPE_BITS.__getitem__)]


def test_options_and_errors():
    o = ActQuantOptions.parse("2.5,objective=magnitude,allocation=uniform,lam=0.3")
    assert (o.bpw, o.objective, o.allocation, o.lam) == (2.5, "magnitude", "uniform", 0.3)
    with pytest.raises(QuantError, match="objective"):
        ActQuantOptions.parse("3,objective=foo")
    with pytest.raises(QuantError, match="bandwidth"):
        ActQuantOptions.parse("3,bandwidth=silverman")
    o = ActQuantOptions.parse("3,error_model=measured,error_rows=64,lattice_weight=eq10,embed=budget")
    assert (o.error_model, o.error_rows, o.lattice_weight, o.embed) == ("measured", 64, "eq10", "budget")
    assert ActQuant(ActQuantOptions(preset="authors")).bandwidth_rule() == "hbar"
    assert ActQuant(ActQuantOptions()).bandwidth_rule() == "median"
    with pytest.raises(QuantError, match="unknown option"):
        ActQuantOptions.parse("3,bogus=1")
    with pytest.raises(QuantError, match="budget"):
        ActQuant().plan({}, __import__("omnimodel.quant.plugin", fromlist=["QuantContext"]).QuantContext())


def test_mix_recipes_follow_llama_quantize_rules(tiny):
    from omnimodel.ggufio.convert import gguf_tensors
    from omnimodel.ggufio.names import is_quantizable

    shapes = {n: tuple(w.shape) for n, w in gguf_tensors(tiny.state_dict).items() if is_quantizable(n, tuple(w.shape))}
    m4 = mix_types("q4_k_m", shapes)
    assert m4["output.weight"] == "Q6_K" and m4["blk.1.attn_v.weight"] == "Q6_K"
    assert m4["blk.0.attn_v.weight"] == "Q4_K" and m4["blk.0.attn_q.weight"] == "Q4_K"  # 2 layers: only i >= 7n/8 gets more bits
    m2 = mix_types("q2_k", shapes)
    assert m2["blk.1.ffn_down.weight"] == "Q3_K" and m2["blk.1.ffn_up.weight"] == "Q2_K"
    m3 = mix_types("q3_k_m", shapes)
    assert m3["blk.0.attn_v.weight"] == "Q5_K" and m3["blk.1.attn_output.weight"] == "Q4_K"


def test_imatrix_baseline_writes_column_importance(tiny, calib, tmp_path):
    q = load_quantizer("imatrix:q3_k_m")
    res = convert(tiny, tmp_path / "m.gguf", q, calibration=calib)
    assert res.types["blk.0.attn_v.weight"] == "Q5_K"
    assert 3.0 < res.bpw < 5.0


def test_cli_quantize_actquant_writes_gguf_and_report(demos, tmp_path):
    from typer.testing import CliRunner

    from omnimodel.cli import app

    out = tmp_path / "tiny.gguf"
    r = CliRunner().invoke(app, ["quantize", "openvla-oft-tiny", "--method", "actquant", "--bpw", "3.5", "--calib",
                                 str(demos), "--calib-frames", "6", "--objective", "magnitude", "--out", str(out),
                                 "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    info = json.loads(r.output.strip().splitlines()[-1])
    assert abs(info["bpw"] - 3.5) <= 0.02
    report = json.loads((tmp_path / "tiny.quant_report.json").read_text())
    assert report["options"]["objective"] == "magnitude" and report["gguf"]["bpw"] == info["bpw"]
    bad = CliRunner().invoke(app, ["quantize", "openvla-oft-tiny", "--method", "actquant", "--out", str(out)])
    assert bad.exit_code != 0
