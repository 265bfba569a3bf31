"""GGUF writer, converter and the quantize/inspect commands on the tiny preset."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from conftest import require
from typer.testing import CliRunner

from omnimodel.errors import CheckpointError, GGUFError, QuantError
from omnimodel.ggufio import names
from omnimodel.ggufio.convert import ModelSource, convert, load_source, permute_rope
from omnimodel.ggufio.reader import read_tensor_bytes, summarize
from omnimodel.ggufio.writer import EncodedTensor, write_gguf
from omnimodel.quant import decode, get_format, ggml_ref
from omnimodel.quant.plugin import QuantContext, Quantizer, TensorPlan, available_quantizers, load_quantizer

PRESET = "openvla-oft-tiny"


@pytest.fixture(scope="module")
def source():
    return load_source(PRESET)


@pytest.fixture(scope="module")
def files(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {m: convert(source, out / f"{m.replace(':', '_')}.gguf", m) for m in ("f32", "q8_0", "rtn:q4_k")}


def _tensor(path, name):
    qtype, shape, data = read_tensor_bytes(path)[name]
    return decode(data, qtype, (int(np.prod(shape[:-1])), shape[-1])).reshape(shape)


def test_permute_rope_known_answer():
    w = torch.arange(8.0)[:, None]  # one column, 2 heads of 4 rows
    assert permute_rope(w, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_same_names_for_every_method_and_types_follow_the_method(files):
    sets = {m: summarize(r.path) for m, r in files.items()}
    names_per = {m: [t.name for t in s.tensors] for m, s in sets.items()}
    assert names_per["f32"] == names_per["q8_0"] == names_per["rtn:q4_k"]
    for t in sets["rtn:q4_k"].tensors:
        want = "Q4_K" if names.is_quantizable(t.name, t.shape) else "F32"
        assert t.ggml_type == want, t.name
    assert files["rtn:q4_k"].bpw == pytest.approx(4.5)
    assert files["q8_0"].bpw == pytest.approx(8.5)
    assert files["rtn:q4_k"].bytes < files["q8_0"].bytes < files["f32"].bytes
    assert not any(".attn_pool." in n for n in names_per["f32"])


def test_qkv_split_and_rope_permutation(files, source):
    sd, cfg = source.state_dict, source.config
    path = files["f32"].path
    qkv = sd["vision_backbone.featurizer.blocks.1.attn.qkv.weight"]
    q, k, v = qkv.chunk(3, dim=0)
    assert torch.equal(_tensor(path, "v.blk.1.attn_q.weight"), q.float())
    assert torch.equal(_tensor(path, "v.blk.1.attn_v.weight"), v.float())
    q_proj = sd["language_model.model.layers.0.self_attn.q_proj.weight"].float()
    assert torch.equal(_tensor(path, "blk.0.attn_q.weight"), permute_rope(q_proj, cfg.heads))
    assert not torch.equal(_tensor(path, "blk.0.attn_q.weight"), q_proj)
    v_proj = sd["language_model.model.layers.0.self_attn.v_proj.weight"].float()
    assert torch.equal(_tensor(path, "blk.0.attn_v.weight"), v_proj)


def test_explicit_transforms_override_defaults(source, tmp_path):
    res = convert(source, tmp_path / "t.gguf", "f32", transforms={"blk.0.attn_output.weight": ["transpose"]})
    o = source.state_dict["language_model.model.layers.0.self_attn.o_proj.weight"].float()
    q = source.state_dict["language_model.model.layers.0.self_attn.q_proj.weight"].float()
    assert torch.equal(_tensor(res.path, "blk.0.attn_output.weight"), o.t())
    assert torch.equal(_tensor(res.path, "blk.0.attn_q.weight"), q)  # no default permutation any more
    with pytest.raises(GGUFError, match="unknown transform"):
        convert(source, tmp_path / "u.gguf", "f32", transforms={"blk.0.attn_q.weight": ["rotate"]})


def test_metadata_holds_config_stats_and_hyperparameters(files, source):
    from omnimodel.archs.openvla_oft.names import ARCH, key
    from omnimodel.ggufio.constants import Keys, arch_key

    meta = summarize(files["q8_0"].path).metadata
    assert meta[Keys.General.ARCHITECTURE] == ARCH
    assert meta[Keys.Omnimodel.QUANT_METHOD] == "q8_0"
    assert json.loads(meta[Keys.Omnimodel.DATASET_STATISTICS_JSON]) == json.loads(json.dumps(source.stats))
    assert json.loads(meta[Keys.Omnimodel.CONFIG_JSON])["omnimodel_towers"][0]["width"] == source.config.dino.width
    assert meta[arch_key(ARCH, key("LLM_BLOCK_COUNT"))] == source.config.layers
    assert meta[arch_key(ARCH, key("LLM_HEAD_COUNT"))] == source.config.heads
    assert not [k for k in meta if ".attention." in k or ".config." in k]  # each value once, under the key the C++ reads


def test_quantized_tensors_decode_close_to_the_weights(files, source):
    w = source.state_dict["language_model.model.layers.1.mlp.up_proj.weight"].float()
    y = _tensor(files["rtn:q4_k"].path, "blk.1.ffn_up.weight")
    rel = ((y - w).norm() / w.norm()).item()
    assert rel < 0.12, f"Q4_K relative error {rel:.3f}"


def test_gguf_loads_in_ggml_c_reader_with_same_tensors(files):
    lib_dir = ggml_ref.find_lib_dir(build=True)
    require(lib_dir is not None, "a GGML CPU build with libggml-base.so")
    lib = ggml_ref.load(str(lib_dir))
    path = files["rtn:q4_k"].path
    c = ggml_ref.read_gguf_c(lib, path)
    py = read_tensor_bytes(path)
    assert list(c) == list(py)
    py_reader = gguf.GGUFReader(str(path))
    assert [t.name for t in py_reader.tensors] == list(c)
    for name, (ctype, cshape, cdata) in c.items():
        ptype, pshape, pdata = py[name]
        assert get_format(ptype).ggml_type == ctype, name
        strip = tuple(pshape)
        while len(strip) > 1 and strip[0] == 1:
            strip = strip[1:]
        assert cshape == strip, name
        assert cdata == bytes(pdata.numpy()), name


class _Q2ForAll(Quantizer):
    name = "test-q2"

    def plan(self, tensors, ctx: QuantContext):
        return {n: TensorPlan("Q2_K") for n in tensors}


def test_type_that_does_not_fit_falls_back_and_is_recorded(source, tmp_path):
    sd = {"language_model.model.layers.0.mlp.down_proj.weight": torch.randn(8, 96)}
    res = convert(ModelSource(sd, source.config), tmp_path / "f.gguf", _Q2ForAll(), transforms={})
    assert res.fallbacks == {"blk.0.ffn_down.weight": ("Q2_K", "IQ4_NL")}  # 96 = 3 blocks of 32
    assert summarize(res.path).tensors[0].ggml_type == "IQ4_NL"


def test_quantizer_registry():
    assert {"f32", "f16", "bf16", "q8_0", "rtn"} <= set(available_quantizers())
    q = load_quantizer("rtn:q3_k")
    assert q.plan({"a": torch.zeros(2, 256)}, QuantContext())["a"].ggml_type == "Q3_K"
    with pytest.raises(QuantError, match="unknown quantizer"):
        load_quantizer("nope")
    with pytest.raises(QuantError, match="unknown GGML type"):
        load_quantizer("rtn:q9_k")


def test_writer_rejects_duplicates_and_wrong_sizes(tmp_path):
    t = EncodedTensor("a", "F32", (2, 2), torch.zeros(16, dtype=torch.uint8))
    with pytest.raises(GGUFError, match="twice"):
        write_gguf(tmp_path / "d.gguf", [t, t], {})
    bad = EncodedTensor("b", "Q8_0", (1, 32), torch.zeros(10, dtype=torch.uint8))
    with pytest.raises(GGUFError, match="expected 34"):
        write_gguf(tmp_path / "s.gguf", [bad], {})
    assert not (tmp_path / "s.gguf").exists()


def test_corrupt_gguf_is_one_line_error(files, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(files["q8_0"].path.read_bytes()[:2000])
    with pytest.raises(GGUFError) as info:
        summarize(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    with pytest.raises(CheckpointError):
        load_source(str(tmp_path / "no-such-model"))


def test_cli_quantize_and_inspect(tmp_path):
    from omnimodel.cli import app

    runner = CliRunner()
    out = tmp_path / "m.gguf"
    r = runner.invoke(app, ["quantize", PRESET, "--method", "rtn:q2_k", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["bpw"] == pytest.approx(2.625)
    r = runner.invoke(app, ["inspect", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["bpw_by_component"]["llm"] < info["bpw_by_component"]["action_head"] == pytest.approx(32.0)
    assert {t["type"] for t in info["tensors"]} == {"Q2_K", "F32"}
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    r = runner.invoke(app, ["inspect", str(tmp_path / "bad.gguf")])
    assert r.exit_code != 0 and isinstance(r.exception, (GGUFError, SystemExit))
