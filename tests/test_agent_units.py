"""Agent path pieces without a build: GGUF name fallback, slots, stub rendering, the fixture's provenance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from omnimodel.archs.openvla_oft import GRAPH_SKILLS
from omnimodel.codegen.slots import function_name, signature, slot_for, stub
from omnimodel.ggufio import names
from omnimodel.llm.base import Request, Response
from omnimodel.paths import skills_dir

FIXTURES = Path(__file__).parent / "fixtures"


def test_unknown_keys_of_a_known_role_keep_their_name_under_the_prefix():
    assert names.gguf_names("proprio_projector.ls.scale_factor") == ["proprio.ls.scale_factor"]
    assert names.gguf_names("proprio_projector.fc1.weight") == ["proprio.fc1.weight"]
    assert names.gguf_names("language_model.model.layers.3.film.gamma") == ["blk.3.film.gamma"]
    assert names.gguf_names("action_head.model.extra.bias") == ["act.model.extra.bias"]
    with pytest.raises(KeyError):
        names.gguf_names("some_new_top_module.weight")
    with pytest.raises(KeyError):  # over GGML's 63-character tensor-name limit
        names.gguf_names("proprio_projector." + "x" * 70)


def test_slots_cover_roles_and_read_signatures_from_skills():
    assert slot_for("proprio_projector", "openvla-oft").skill == "proprio_projector"
    assert slot_for("language_model.model.layers.7").gguf_prefix("language_model.model.layers.7") == "blk.7."
    assert slot_for("vision_backbone.fused_featurizer.blocks.2").skill == "siglip_block"
    assert slot_for("language_model.model.embed_tokens") is None
    sig = signature(skills_dir(), slot_for("proprio_projector", "openvla-oft"))
    assert (
        sig
        == "static ggml_tensor * build_proprio_projector(ggml_context * ctx, ggml_tensor * p, const proprio_weights & W)"
    )
    assert function_name(sig) == "build_proprio_projector"
    text = stub(slot_for("proprio_projector", "openvla-oft"), sig, "proprio_projector")
    assert sig in text and "OMNI_ERR_UNKNOWN_MODULE" in text


def test_render_with_a_slot_includes_the_agents_file_and_keeps_it(tmp_path):
    from omnimodel.codegen.render import choose_skills, render_project

    render_project(tmp_path, choose_skills(GRAPH_SKILLS), "openvla-oft", slots={"proprio_projector": "proprio_projector"})
    source = (tmp_path / "cpp" / "omnimodel_policy.cpp").read_text()
    header = tmp_path / "cpp" / "modules" / "proprio_projector.h"
    assert '#include "modules/proprio_projector.h"' in source
    assert source.count("build_proprio_projector(ggml_context") == 0  # the skill's own body is not emitted
    assert "not written" in header.read_text()
    header.write_text("// the agent's code\n")
    render_project(tmp_path, choose_skills(GRAPH_SKILLS), "openvla-oft", slots={"proprio_projector": "proprio_projector"})
    assert header.read_text() == "// the agent's code\n"


def test_fixture_is_labelled_authored_and_answers_what_the_scripted_agent_answers():
    sys.path.insert(0, str(FIXTURES))
    from scripted_agent import ScriptedAgent

    lines = (FIXTURES / "gelu_ls_proprio.jsonl").read_text().splitlines()
    header = json.loads(lines[0])["header"]
    assert header["authored"] is True and header["note"].startswith(
        "authored, not recorded from a live model"
    )
    agent = ScriptedAgent("fake-gelu-ls")
    entries = [json.loads(line) for line in lines[1:]]
    assert len(entries) == 5
    for entry in entries:
        request = Request.from_dict(entry["request"])
        # tool results were cut to their first line: enough for the script's checks
        assert agent.complete(request).to_dict() == Response.from_dict(entry["response"]).to_dict()
    kinds = [
        m["content"].split(" ")[0:2]
        for e in entries
        for m in e["request"]["messages"][-1:]
        if m["role"] == "tool"
    ]
    assert ["BUILD", "FAILED"] in kinds and ["PARITY", "FAIL"] in kinds and ["PARITY", "PASS"] in kinds


def test_checkpoint_module_code_needs_explicit_trust(tmp_path, monkeypatch):
    import json

    import pytest
    import torch

    from omnimodel.errors import CheckpointError
    from omnimodel.models.custom import KEY, TRUST_ENV, install_custom_modules

    (tmp_path / "custom_modules.py").write_text("import torch\nclass M(torch.nn.Module):\n    pass\n")
    (tmp_path / "config.json").write_text(json.dumps({KEY: {"proj": {"file": "custom_modules.py", "class": "M"}}}))
    holder = torch.nn.Module()
    holder.proj = torch.nn.Identity()
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(CheckpointError, match="--trust-remote-code"):
        install_custom_modules(holder, tmp_path)
    assert isinstance(holder.proj, torch.nn.Identity)  # nothing ran
    monkeypatch.setenv(TRUST_ENV, "1")
    install_custom_modules(holder, tmp_path)
    assert type(holder.proj).__name__ == "M"
