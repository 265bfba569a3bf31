"""The port pipeline end to end on the tiny checkpoint: parity, quantized parity, reflector fix, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import require

from omnimodel.models import zoo


def _docker_or_compiler() -> bool:
    return shutil.which("cmake") is not None and (shutil.which("c++") is not None or shutil.which("docker") is not None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    require(_docker_or_compiler(), "cmake and a C++ compiler (or Docker) for the native build")
    return zoo.make_checkpoint("openvla-oft-tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _port(ckpt: Path, run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "omnimodel.cli", "port", "openvla-oft", "--checkpoint", str(ckpt), "--run-dir", str(run_dir), "--json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=1500)


def _events(res: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def f32_run(tiny, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "f32"
    res = _port(tiny, run_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


def test_f32_port_every_module_at_parity(f32_run):
    report = _report(f32_run)
    assert report["status"] == "ok"
    names = [m["name"] for m in report["modules"]]
    for expected in ("vision_backbone.featurizer.patch_embed", "vision_backbone.featurizer.blocks.0",
                     "vision_backbone.fused_featurizer.blocks.1", "projector", "proprio_projector",
                     "language_model.model.layers.1", "action_head"):
        assert expected in names, f"{expected} not validated: {names}"
    for m in report["modules"]:
        assert m["cosine"] >= 0.99999, f"{m['name']}: cosine {m['cosine']} < 0.99999 (max abs {m['max_abs_err']})"
        assert m["realised_by"].startswith("skill:")
    e2e = report["end_to_end"]
    assert e2e["action_max_abs_err"] <= 1e-4, f"end to end: max abs {e2e['action_max_abs_err']} > 1e-4"
    for key in ("model", "status", "modules", "end_to_end", "gguf", "llm", "timings"):
        assert key in report
    assert report["llm"]["calls"] == 0 and report["gguf"]["bytes"] > 0
    for artifact in ("analysis.json", "plan.json", "model.gguf", "cpp", "build", "reference", "validation.json", "report.md", "state.sqlite"):
        assert (f32_run / artifact).exists(), artifact


def test_f16_port_thresholds(tiny, tmp_path):
    run_dir = tmp_path / "f16"
    res = _port(tiny, run_dir, "--quant", "f16")
    assert res.returncode == 0, res.stderr[-3000:]
    report = _report(run_dir)
    for m in report["modules"]:
        assert m["cosine"] >= 0.9999, f"{m['name']}: cosine {m['cosine']} < 0.9999"
    assert report["end_to_end"]["action_max_abs_err"] <= 1e-2


def test_q8_0_port_matches_pytorch(tiny, tmp_path):
    run_dir = tmp_path / "q8"
    res = _port(tiny, run_dir, "--quant", "q8_0")
    assert res.returncode == 0, res.stderr[-3000:]
    e2e = _report(run_dir)["end_to_end"]
    assert e2e["action_cosine"] >= 0.999, f"vs the quantizer's simulation: {e2e['action_cosine']}"
    assert e2e["action_cosine_vs_fp32"] >= 0.999, f"vs fp32 PyTorch: {e2e['action_cosine_vs_fp32']}"


def test_broken_skill_is_caught_named_and_fixed(tiny, tmp_path):
    skills = tmp_path / "skills"
    shutil.copytree(Path(__file__).resolve().parent.parent / "skills", skills)
    tmap_path = skills / "fused_projector" / "tensor_map.yaml"
    tmap = yaml.safe_load(tmap_path.read_text())
    tmap["fc3.weight"]["transforms"] = ["transpose"]  # the deliberate bug
    tmap_path.write_text(yaml.safe_dump(tmap))
    run_dir = tmp_path / "broken"
    res = _port(tiny, run_dir, "--skills-dir", str(skills))
    assert res.returncode == 0, res.stderr[-3000:]
    report = _report(run_dir)
    assert report["status"] == "ok" and report["iterations"] == 1
    (fix,) = report["fixes"]
    assert fix["rule"] == "transposed" and fix["tensors"] == ["mm.fc3.weight"] and fix["module"] == "projector"


def test_resume_after_kill_in_designer(tiny, tmp_path):
    run_dir = tmp_path / "killed"
    res = _port(tiny, run_dir, env={"OMNIMODEL_TEST_KILL_IN": "designer"})
    assert res.returncode != 0 and not (run_dir / "report.json").exists()
    assert [e["node"] for e in _events(res) if e["event"] == "node"][-1] == "converter"
    analysis_mtime = (run_dir / "analysis.json").stat().st_mtime_ns
    res = subprocess.run([sys.executable, "-m", "omnimodel.cli", "port", "--resume", str(run_dir), "--json"],
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    nodes = [e["node"] for e in _events(res) if e["event"] == "node"]
    assert nodes[0] == "designer" and "analyzer" not in nodes
    assert (run_dir / "analysis.json").stat().st_mtime_ns == analysis_mtime
    assert _report(run_dir)["status"] == "ok"


def test_module_without_skill_fails_naming_it(tiny, tmp_path):
    skills = tmp_path / "skills"
    shutil.copytree(Path(__file__).resolve().parent.parent / "skills", skills)
    shutil.rmtree(skills / "proprio_projector")
    run_dir = tmp_path / "noskill"
    res = _port(tiny, run_dir, "--skills-dir", str(skills))
    assert res.returncode != 0
    report = _report(run_dir)
    assert report["status"] == "failed" and report["failing_module"] == "proprio_projector"
    assert "proprio_projector (ProprioProjector) has no skill" in res.stderr
