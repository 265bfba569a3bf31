"""Knowledge base: tree-sitter symbol extraction, BM25 ranking, the hash-keyed cache and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnimodel.kb import index as kb_index
from omnimodel.kb.index import build_index, split_identifier, tokenize
from omnimodel.kb.symbols import extract_symbols

CPP = """\
#include "ggml.h"

namespace omni {

// Weights of a FiLM-conditioned MLP, filled by the loader.
struct FilmMlpWeights {
    ggml_tensor * fc1_w;
    ggml_tensor * fc2_w;
};

class GraphBuilder {
public:
    // Scale and shift the hidden state by the conditioning vector.
    ggml_tensor * apply_film(ggml_context * ctx, ggml_tensor * x) const { return x; }
};

/// GELU-tanh MLP with LayerScale and a bias-free output projection.
static ggml_tensor * build_film_mlp(ggml_context * ctx, const FilmMlpWeights & w, ggml_tensor * x) {
    x = ggml_mul_mat(ctx, w.fc1_w, x);
    x = ggml_gelu(ctx, x);
    return ggml_mul_mat(ctx, w.fc2_w, x);
}

}  // namespace omni

int omni::GraphBuilder::count() { return 0; }
OMNI_API int omni_run_module(const char * name);  // run one module by name
"""

PY = '''\
class RMSNorm:
    """Root-mean-square layer normalisation."""

    def forward(self, x):
        """Normalise x by its RMS."""
        return x


def make_rope_cache(dim: int):
    return dim
'''

NOTES = """\
# GGML API notes: ggml.h

## operations

### ggml_rms_norm
```c
struct ggml_tensor * ggml_rms_norm(struct ggml_context * ctx, struct ggml_tensor * a, float eps);
```
normalize along rows
"""

SKILL = """\
---
name: film_mlp
description: FiLM-conditioned MLP with GELU-tanh.
applies_to:
  - {class: FilmMLP, has_params: [film.weight]}
provenance: hand-written
version: 1
---
# FiLM MLP

## Layout
fc1 then gelu then fc2.
"""


@pytest.fixture()
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setenv("OMNIMODEL_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    (src / "cpp").mkdir(parents=True)
    (src / "cpp" / "film.cpp").write_text(CPP)
    (src / "model.py").write_text(PY)
    (src / "ggml_api").mkdir()
    (src / "ggml_api" / "ggml_api.md").write_text(NOTES)
    (src / "skills" / "film_mlp").mkdir(parents=True)
    (src / "skills" / "film_mlp" / "SKILL.md").write_text(SKILL)
    (src / "notes.txt").write_text("not indexed")
    return [src]


def by_name(symbols: list) -> dict:
    return {s.name: s for s in symbols}


def test_identifier_splitting() -> None:
    assert split_identifier("ggml_mul_mat") == ["ggml", "mul", "mat", "ggml_mul_mat"]
    assert split_identifier("LlamaRMSNorm") == ["llama", "rms", "norm", "llamarmsnorm"]
    assert split_identifier("conv2d") == ["conv", "2", "d", "conv2d"]
    assert "the" not in tokenize("the LayerScale of a block")
    assert tokenize("LayerScale") == ["layer", "scale", "layerscale"]


def test_cpp_symbols_kinds_lines_and_docs() -> None:
    symbols = by_name(extract_symbols(Path("film.cpp"), CPP, "film.cpp"))
    weights = symbols["omni::FilmMlpWeights"]
    assert (weights.kind, weights.line) == ("struct", 6)
    assert "filled by the loader" in weights.doc
    assert symbols["omni::GraphBuilder"].kind == "class"
    method = symbols["omni::GraphBuilder::apply_film"]
    assert method.kind == "method" and "conditioning vector" in method.doc
    build = symbols["omni::build_film_mlp"]
    assert (build.kind, build.line) == ("function", 18)
    assert build.doc == "GELU-tanh MLP with LayerScale and a bias-free output projection."
    assert build.signature.startswith("static ggml_tensor * build_film_mlp(")
    assert "ggml_gelu" in build.snippet
    assert symbols["omni::GraphBuilder::count"].kind == "method"
    exported = symbols["omni_run_module"]  # OMNI_API macro blanked, trailing comment kept as doc
    assert exported.signature == "int omni_run_module(const char * name)"
    assert exported.doc == "run one module by name"


def test_python_markdown_and_skill_symbols() -> None:
    py = by_name(extract_symbols(Path("m.py"), PY, "m.py"))
    assert py["RMSNorm"].doc == "Root-mean-square layer normalisation."
    assert (py["RMSNorm.forward"].kind, py["RMSNorm.forward"].line) == ("method", 4)
    assert py["make_rope_cache"].kind == "function"
    notes = by_name(extract_symbols(Path("ggml_api.md"), NOTES, "ggml_api.md"))
    assert notes["ggml_rms_norm"].kind == "ggml_api"
    assert notes["ggml_rms_norm"].signature.startswith("struct ggml_tensor * ggml_rms_norm(")
    assert notes["operations"].kind == "note"
    skill = by_name(extract_symbols(Path("SKILL.md"), SKILL, "skills/film_mlp/SKILL.md"))
    assert skill["film_mlp"].kind == "skill"
    assert "FilmMLP" in skill["film_mlp"].doc
    assert skill["Layout"].line == 11  # body line numbers count the front matter


def test_search_ranks_exact_names_first_and_finds_words(roots: list[Path]) -> None:
    kb = build_index(roots)
    assert {s.path.rsplit("/", 1)[-1] for s in kb.symbols} == {
        "film.cpp",
        "model.py",
        "ggml_api.md",
        "SKILL.md",
    }
    top = kb.search("build_film_mlp", limit=3)
    assert top[0].symbol.name == "omni::build_film_mlp"
    assert top[0].score > 2 * top[1].score
    assert kb.search("rms norm", limit=1)[0].symbol.name in {"ggml_rms_norm", "RMSNorm"}
    assert kb.search("ggml_rms_norm", limit=1)[0].symbol.kind == "ggml_api"
    assert kb.search("layer scale bias-free", limit=1)[0].symbol.name == "omni::build_film_mlp"
    # "normalisation" is expanded to the indexed abbreviation "norm"
    assert any(h.symbol.name == "ggml_rms_norm" for h in kb.search("normalisation", limit=5))
    assert kb.search("zzzz qqqq") == []
    line = top[0].one_line()
    assert line.startswith(top[0].symbol.path + ":18 omni::build_film_mlp function ")


def test_cache_reuses_unchanged_files_and_reparses_changed(
    roots: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    build_index(roots)
    calls: list[str] = []
    real = kb_index.extract_symbols

    def counting(path, text, display):  # noqa: ANN001, ANN202
        calls.append(Path(path).name)
        return real(path, text, display)

    monkeypatch.setattr(kb_index, "extract_symbols", counting)
    again = build_index(roots)
    assert calls == []
    assert any(s.name == "omni::build_film_mlp" for s in again.symbols)
    cpp = roots[0] / "cpp" / "film.cpp"
    cpp.write_text(CPP.replace("build_film_mlp", "build_film_mlp_v2"))
    changed = build_index(roots)
    assert calls == ["film.cpp"]
    assert changed.search("build_film_mlp_v2", limit=1)[0].symbol.name == "omni::build_film_mlp_v2"
    cache_files = list((roots[0].parent / "cache" / "kb").glob("index-*.json"))
    assert len(cache_files) == 1
    cached = json.loads(cache_files[0].read_text())
    assert str(cpp.resolve()) in cached["files"]


def test_run_sources_are_indexed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIMODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMNIMODEL_SKILLS_DIR", str(tmp_path / "skills"))
    monkeypatch.setenv("OMNIMODEL_KB_DIR", str(tmp_path / "kb"))
    run = tmp_path / "run"
    (run / "cpp").mkdir(parents=True)
    (run / "cpp" / "model.cpp").write_text(CPP)
    hits = kb_index.search("apply_film", run_dir=run)
    assert hits and hits[0].symbol.name == "omni::GraphBuilder::apply_film"
    assert kb_index.search("apply_film") == []
