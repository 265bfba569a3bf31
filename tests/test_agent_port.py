"""The agent path end to end: a module no skill covers, ported by replaying an authored transcript.

One replayed port (compile error and parity miss repaired, the reflector feeding the miss back),
the learned skill reused by a second model with other sizes (zero LLM calls), a diverging replay,
and a budget that stops a run that never converges.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import require

from omnimodel.paths import REPO_ROOT

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "gelu_ls_proprio.jsonl"
SKILL = "proprio_projector_gelu_layer_scale_proprio"
sys.path.insert(0, str(FIXTURES))


def _toolchain() -> bool:
    return shutil.which("cmake") is not None and (
        shutil.which("c++") is not None or shutil.which("docker") is not None
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A temporary skills/ copy and knowledge base (never the repository's)."""
    require(_toolchain(), "cmake and a C++ compiler (or Docker) for the native build")
    root = tmp_path_factory.mktemp("agent")
    shutil.copytree(REPO_ROOT / "skills", root / "skills")
    shutil.copytree(REPO_ROOT / "knowledge_base" / "ggml_api", root / "kb" / "ggml_api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMNIMODEL_KB_DIR", str(root / "kb"))
        mp.setenv("OMNIMODEL_TRUST_REMOTE_CODE", "1")  # the test model ships its module code
        yield root


def _port(env: Path, ckpt: Path, name: str, llm: str | None, skills: Path | None = None, **kw) -> dict:
    from omnimodel.port import new_options, run_port

    skills = skills or env / "skills"
    opts = new_options(
        "openvla-oft", str(ckpt), str(env / "runs" / name), llm=llm, skills_dir=str(skills), **kw
    )
    return run_port(opts)


@pytest.fixture(scope="module")
def replay_run(env):
    from agent_model import make_custom_checkpoint

    ckpt = make_custom_checkpoint(env / "ckpt96", hidden=96)
    report = _port(env, ckpt, "replay", f"replay:{FIXTURE}")
    return env / "runs" / "replay", report


def test_replayed_port_repairs_compile_error_and_parity_miss(replay_run):
    run, report = replay_run
    assert report["status"] == "ok", report.get("diagnosis")
    mods = {m["name"]: m for m in report["modules"]}
    assert mods["proprio_projector"]["realised_by"] == "llm"
    for m in report["modules"]:
        assert m["passed"] and m["cosine"] >= 0.99999, m
    assert report["end_to_end"]["action_max_abs_err"] <= 1e-4
    assert report["llm"]["calls"] == 5 and report["llm"]["input_tokens"] > 0
    sessions = json.loads((run / "agent" / "sessions.json").read_text())
    assert [s["iteration"] for s in sessions] == [0, 1]
    assert sessions[0]["checks"] == ["BUILD FAILED (build step)", "PARITY FAIL proprio_projector"]
    assert sessions[1]["checks"] == ["PARITY PASS proprio_projector"]
    assert sessions[1]["messages"][0]["content"].startswith("The validator rejected module proprio_projector")
    assert {"iteration": 1, "module": "proprio_projector", "rule": "agent:tolerance"} in report["fixes"]
    code = (run / "cpp" / "modules" / "proprio_projector.h").read_text()
    assert 'W.get("ls.scale_factor")' in code


def test_learned_skill_is_installed_indexed_and_the_run_filed(replay_run, env):
    from omnimodel.kb.index import search
    from omnimodel.paths import knowledge_base_dir
    from omnimodel.skills import load_skill, match_skill

    run, _ = replay_run
    learned = json.loads((run / "learned.json").read_text())
    assert [x["status"] for x in learned] == ["added"] and "cosine 1.0000" in learned[0]["parity"]
    skill = load_skill(env / "skills" / SKILL)
    assert (
        skill.provenance["learned_from_run"] == run.name and skill.provenance["module"] == "proprio_projector"
    )
    params = ["fc_in.bias", "fc_in.weight", "ls.scale_factor", "proj.weight"]
    assert match_skill("GeluLayerScaleProprio", params, [skill]) is skill
    assert not (REPO_ROOT / "skills" / SKILL).exists()
    hits = search("gelu_tanh_approx", limit=5, roots=[env / "skills", knowledge_base_dir()])
    assert any(SKILL in h.symbol.path for h in hits), [h.symbol.path for h in hits]
    entry = json.loads((env / "kb" / "models" / f"openvla-oft-tiny-{run.name}" / "entry.json").read_text())
    assert entry["realised_by_llm"] == ["proprio_projector"] and entry["learned_skills"][0]["skill"] == SKILL


def test_second_model_with_other_sizes_needs_no_llm(replay_run, env, tmp_path):
    from agent_model import make_custom_checkpoint

    ckpt = make_custom_checkpoint(env / "ckpt48", hidden=48)
    empty = tmp_path / "empty.jsonl"  # any LLM call would fail: the transcript holds none
    empty.write_text(
        json.dumps(
            {"header": {"authored": True, "note": "authored, not recorded from a live model: no calls"}}
        )
        + "\n"
    )
    report = _port(env, ckpt, "second", f"replay:{empty}")
    assert report["status"] == "ok", report.get("diagnosis")
    assert report["llm"]["calls"] == 0
    mods = {m["name"]: m for m in report["modules"]}
    assert mods["proprio_projector"]["realised_by"] == f"skill:{SKILL}"
    assert mods["proprio_projector"]["cosine"] >= 0.99999
    assert report["end_to_end"]["action_max_abs_err"] <= 1e-4


def _fresh_skills(tmp_path: Path) -> Path:
    """The repository's skills only (the module tests may have learned one in the shared copy)."""
    shutil.copytree(REPO_ROOT / "skills", tmp_path / "skills")
    return tmp_path / "skills"


def test_diverging_replay_fails_naming_the_first_difference(env, tmp_path):
    from agent_model import make_custom_checkpoint

    ckpt = make_custom_checkpoint(env / "ckpt64", hidden=64)  # the task names other weight shapes
    report = _port(env, ckpt, "diverged", f"replay:{FIXTURE}", _fresh_skills(tmp_path))
    assert report["status"] == "failed" and report["failing_module"] == "proprio_projector"
    detail = report["diagnosis"]["detail"]
    assert "does not match the recording at messages[0].text" in detail and "differs at char" in detail


def test_budget_stops_a_run_that_never_converges(env, tmp_path):
    from agent_model import make_custom_checkpoint

    ckpt = make_custom_checkpoint(env / "ckpt96b", hidden=96)
    first = json.loads(
        FIXTURE.read_text().splitlines()[1]
    )  # the recorded first call: write broken code, build
    never = tmp_path / "never.jsonl"
    header = {
        "header": {
            "authored": True,
            "note": "authored, not recorded from a live model: a model that never converges",
        }
    }
    never.write_text(json.dumps(header) + "\n" + json.dumps(first) + "\n")
    report = _port(
        env, ckpt, "budget", f"replay:{never}", _fresh_skills(tmp_path), llm_budget={"max_calls": 1}
    )
    assert report["status"] == "failed" and report["failing_module"] == "proprio_projector"
    assert report["diagnosis"]["kind"] == "llm_budget"
    assert "1 of 1 calls" in report["diagnosis"]["detail"]
    assert report["diagnosis"]["last_check"].startswith("BUILD FAILED")
    assert report["llm"]["calls"] == 1
