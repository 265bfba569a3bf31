"""Skills registry: validation of skill folders, signature matching, add/remove with re-indexing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from omnimodel.kb.index import build_index
from omnimodel.skills import (
    SkillError,
    add_skill,
    invalid_skills,
    load_skill,
    load_skills,
    match_skill,
    remove_skill,
)

TEMPLATE = """\
// {{ name }}: generated from a skill template
static ggml_tensor * build_{{ name }}(ggml_context * ctx, ggml_tensor * x) {
{% for i in range(n_layers) %}    x = ggml_gelu(ctx, x);
{% endfor %}    return x;
}
"""


def write_skill(
    root: Path,
    name: str,
    applies_to: str,
    *,
    version: str = "1",
    tensor_map: str = "fc1.weight: {gguf: ffn_up.weight, transforms: [transpose]}\nfc2.weight: ffn_down.weight\n",
    template: str = TEMPLATE,
    vector: dict | None = None,
    vector_kind: str = "safetensors",
) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(
        f"---\nname: {name}\ndescription: Test skill {name}.\napplies_to:\n{applies_to}\n"
        f"provenance: hand-written\nversion: {version}\n---\n# {name}\n\nHow the port works.\n"
    )
    (folder / "template.cpp.j2").write_text(template)
    (folder / "tensor_map.yaml").write_text(tensor_map)
    tensors = (
        vector
        if vector is not None
        else {"in.0": np.ones((2, 4), np.float32), "out": np.zeros((2, 4), np.float32)}
    )
    if vector_kind == "safetensors":
        save_file(tensors, str(folder / "test_vector.safetensors"))
    else:
        import gguf

        writer = gguf.GGUFWriter(str(folder / "test_vector.gguf"), "omnimodel-test")
        for tensor_name, value in tensors.items():
            writer.add_tensor(tensor_name, value)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return folder


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    root = tmp_path / "skills"
    write_skill(root, "dinov2_block", "  - {class: Block, has_params: [ls1.scale_factor, ls2.scale_factor]}")
    write_skill(root, "siglip_block", "  - {class: Block, lacks_params: ['ls1.*']}", vector_kind="gguf")
    write_skill(root, "generic_block", "  - Block")
    write_skill(root, "film_mlp", "  - {has_params: ['film.*.weight', fc1.weight]}\n  - {class: FiLMMLP}")
    return root


BLOCK_PARAMS = ["norm1.weight", "attn.qkv.weight", "mlp.fc1.weight", "ls1.scale_factor", "ls2.scale_factor"]


def test_load_skill_reads_every_part(library: Path) -> None:
    skill = load_skill(library / "dinov2_block")
    assert skill.name == "dinov2_block" and skill.version == "1" and skill.provenance == "hand-written"
    assert skill.applies_to[0].module_class == "Block"
    assert skill.applies_to[0].has_params == ("ls1.scale_factor", "ls2.scale_factor")
    assert skill.tensor_map["fc1.weight"].gguf == "ffn_up.weight"
    assert skill.tensor_map["fc1.weight"].transforms == ("transpose",)
    assert skill.tensor_map["fc2.weight"].transforms == ()
    assert skill.test_vector_path.name == "test_vector.safetensors"
    assert "How the port works." in skill.body
    assert load_skill(library / "siglip_block").test_vector_path.name == "test_vector.gguf"
    assert [s.name for s in load_skills(library)] == [
        "dinov2_block",
        "film_mlp",
        "generic_block",
        "siglip_block",
    ]


def test_most_specific_match_wins(library: Path) -> None:
    skills = load_skills(library)
    assert match_skill("Block", BLOCK_PARAMS, skills).name == "dinov2_block"
    siglip = [p for p in BLOCK_PARAMS if not p.startswith("ls")]
    assert match_skill("Block", siglip, skills).name == "siglip_block"
    # has ls1 but not ls2: dinov2 does not match, siglip's lacks excludes it, the generic one remains
    assert match_skill("Block", [*siglip, "ls1.scale_factor"], skills).name == "generic_block"
    assert match_skill("FiLMMLP", [], skills).name == "film_mlp"
    assert match_skill("Anything", ["film.gamma.weight", "fc1.weight"], skills).name == "film_mlp"
    assert match_skill("Anything", ["film.gamma.weight"], skills) is None
    assert match_skill("LlamaDecoderLayer", ["self_attn.q_proj.weight"], skills) is None


def test_newer_version_breaks_ties(tmp_path: Path) -> None:
    root = tmp_path / "skills"
    write_skill(root, "mlp_a", "  - {class: Mlp}", version="1.0")
    write_skill(root, "mlp_b", "  - {class: Mlp}", version="1.10")
    assert match_skill("Mlp", [], load_skills(root)).name == "mlp_b"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"applies_to": "  - {klass: Block}"}, "unknown applies_to key 'klass'"),
        ({"applies_to": "  - {has_params: ln.weight}"}, "has_params must be a list"),
        ({"applies_to": "  - {}"}, "applies_to entries must be mappings"),
        ({"template": "{% for x in %}"}, "template is not valid Jinja2"),
        (
            {"tensor_map": "fc1.weight: {transforms: [transpose]}\n"},
            "entry 'fc1.weight' needs a 'gguf' name suffix",
        ),
        ({"tensor_map": "[1, 2]\n"}, "must map PyTorch parameter names"),
        ({"vector": {"in.0": np.ones(3, np.float32)}}, "needs input tensors"),
    ],
)
def test_invalid_skill_folders_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    args = {"applies_to": "  - {class: Block}", **change}
    folder = write_skill(tmp_path, "broken_skill", args.pop("applies_to"), **args)
    with pytest.raises(SkillError, match=message):
        load_skill(folder)


def test_front_matter_problems(tmp_path: Path) -> None:
    folder = write_skill(tmp_path, "ok_skill", "  - {class: Block}")
    skill_md = folder / "SKILL.md"
    skill_md.write_text("# no front matter\n")
    with pytest.raises(SkillError, match="must start with YAML front matter"):
        load_skill(folder)
    skill_md.write_text("---\nname: ok_skill\ndescription: x\napplies_to: [Block]\n---\n")
    with pytest.raises(SkillError, match="lacks provenance, version"):
        load_skill(folder)
    skill_md.write_text(
        "---\nname: Bad-Name\ndescription: x\napplies_to: [Block]\nprovenance: p\nversion: 1\n---\n"
    )
    with pytest.raises(SkillError, match="must be lower_snake_case"):
        load_skill(folder)
    (folder / "test_vector.safetensors").write_bytes(b"not a safetensors file")
    skill_md.write_text(
        "---\nname: ok_skill\ndescription: x\napplies_to: [Block]\nprovenance: p\nversion: 1\n---\n"
    )
    with pytest.raises(SkillError, match="cannot read the test vector"):
        load_skill(folder)


def test_invalid_folders_are_skipped_or_raise_when_strict(
    library: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (library / "half_written").mkdir()
    with caplog.at_level(logging.WARNING, logger="omnimodel.skills"):
        names = [s.name for s in load_skills(library)]
    assert "half_written" not in "".join(names) and len(names) == 4
    assert "half_written: no SKILL.md" in caplog.text
    assert [p.name for p, _ in invalid_skills(library)] == ["half_written"]
    with pytest.raises(SkillError, match="half_written: no SKILL.md"):
        load_skills(library, strict=True)


def test_add_and_remove_reindex_the_knowledge_base(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNIMODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMNIMODEL_KB_DIR", str(tmp_path / "kb"))
    staging = tmp_path / "learned"
    src = write_skill(staging, "gelu_tanh_mlp", "  - {class: GeluMlp, has_params: [ls.gamma]}")
    (src / "__pycache__").mkdir()
    installed = add_skill(src, library)
    assert installed.path == library / "gelu_tanh_mlp"
    assert not (installed.path / "__pycache__").exists()
    assert sorted(p.name for p in installed.path.iterdir()) == sorted(
        p.name for p in src.iterdir() if p.name != "__pycache__"
    )
    assert match_skill("GeluMlp", ["ls.gamma"], load_skills(library)).name == "gelu_tanh_mlp"
    kb = build_index([library, tmp_path / "kb"])
    assert kb.search("gelu_tanh_mlp", limit=1)[0].symbol.kind == "skill"

    with pytest.raises(SkillError, match="already exists"):
        add_skill(src, library)
    (src / "SKILL.md").write_text((src / "SKILL.md").read_text().replace("version: 1", "version: 2"))
    assert add_skill(src, library, replace=True).version == "2"

    broken = write_skill(staging, "broken_one", "  - {class: X}", tensor_map="{}\n")
    with pytest.raises(SkillError):
        add_skill(broken, library)
    assert not (library / "broken_one").exists()

    assert remove_skill("gelu_tanh_mlp", library) == library / "gelu_tanh_mlp"
    assert not (library / "gelu_tanh_mlp").exists()
    hits = build_index([library, tmp_path / "kb"]).search("gelu_tanh_mlp")
    assert all(h.symbol.name != "gelu_tanh_mlp" for h in hits)
    with pytest.raises(SkillError, match="no skill named 'gelu_tanh_mlp'"):
        remove_skill("gelu_tanh_mlp", library)
