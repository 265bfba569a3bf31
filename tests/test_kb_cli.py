"""The `omnimodel kb` and `omnimodel skills` commands, run through the typer app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from omnimodel.cli import app


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OMNIMODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMNIMODEL_SKILLS_DIR", str(tmp_path / "skills"))
    monkeypatch.setenv("OMNIMODEL_KB_DIR", str(tmp_path / "kb"))
    (tmp_path / "skills").mkdir()
    notes = tmp_path / "kb" / "ggml_api" / "ggml_api.md"
    notes.parent.mkdir(parents=True)
    notes.write_text(
        "# notes\n\n### ggml_gelu\n```c\nstruct ggml_tensor * ggml_gelu(struct ggml_context * ctx, "
        "struct ggml_tensor * a);\n```\nGELU activation\n\n### ggml_mul_mat\n```c\nstruct ggml_tensor * "
        "ggml_mul_mat(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);\n```\n"
    )
    return tmp_path


def make_skill(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(
        "---\nname: film_mlp\ndescription: FiLM MLP.\napplies_to:\n  - {class: FiLMMLP}\n"
        "provenance: {learned_from: runs/demo}\nversion: 1\n---\nbody\n"
    )
    (folder / "template.cpp.j2").write_text("// {{ n }}\n")
    (folder / "tensor_map.yaml").write_text("fc1.weight: {gguf: ffn_up.weight, transforms: [transpose]}\n")
    save_file(
        {"in.0": np.ones(2, np.float32), "out": np.ones(2, np.float32)},
        str(folder / "test_vector.safetensors"),
    )
    return folder


def test_kb_search_prints_path_line_symbol_kind_score(env: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["kb", "search", "ggml_gelu", "--limit", "1"])
    assert result.exit_code == 0, result.output
    path, symbol, kind, score = result.stdout.split()
    assert path.endswith("ggml_api.md:3") and symbol == "ggml_gelu" and kind == "ggml_api"
    assert float(score) > 0
    result = runner.invoke(app, ["kb", "search", "mul mat", "--json"])
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert hits[0]["name"] == "ggml_mul_mat" and hits[0]["signature"].startswith("struct ggml_tensor *")


def test_skills_add_list_show_remove(env: Path) -> None:
    runner = CliRunner()
    src = make_skill(env / "staging" / "film_mlp")
    result = runner.invoke(app, ["skills", "add", str(src)])
    assert result.exit_code == 0, result.output
    assert (env / "skills" / "film_mlp" / "SKILL.md").is_file()
    listed = runner.invoke(app, ["skills", "list", "--json"])
    entry = json.loads(listed.stdout.strip())
    assert entry["name"] == "film_mlp" and entry["applies_to"] == [{"class": "FiLMMLP"}]
    shown = runner.invoke(app, ["skills", "show", "film_mlp"])
    assert "fc1.weight -> ffn_up.weight ['transpose']" in shown.stdout
    assert runner.invoke(app, ["kb", "search", "film_mlp", "--limit", "1"]).stdout.split()[2] == "skill"
    again = runner.invoke(app, ["skills", "add", str(src)])
    assert again.exit_code != 0 and "already exists" in str(again.exception)
    removed = runner.invoke(app, ["skills", "remove", "film_mlp"])
    assert removed.exit_code == 0 and not (env / "skills" / "film_mlp").exists()
