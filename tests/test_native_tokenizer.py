"""The tokenizer inside the native build: llama.cpp's tokenizer.ggml.* keys in the GGUF, llama.cpp's
vocabulary code in the library, token ids equal to the Python path's, and policy_cli --instruction."""

from __future__ import annotations

import numpy as np
import pytest
from test_codegen_native import cli, ggml_prefix, native_build, tiny_run  # noqa: F401

from omnimodel import runtime
from omnimodel.ggufio.constants import Keys

# Beyond the suite: mixed case, punctuation, digits, repeated and edge spaces, quotes and backslashes.
EXTRA_INSTRUCTIONS = (
    "Put the BOWL on the Plate!",
    "pick up the alphabet soup, and place it in the basket.",
    "  open the top drawer   and put the bowl inside  ",
    'turn on the stove; then "wait" (5s) \\ ok?',
    "Stack 3 cups: red/green-blue #1 & 2 @home",
    "",
)


def _suite_instructions() -> list[str]:
    from omnimodel.suite.tasks import _SUITES, suite_tasks

    return [t.instruction for suite in _SUITES for t in suite_tasks(suite)]


def test_gguf_carries_the_tokenizer_as_gguf_py_writes_it(tiny_run):  # noqa: F811
    import gguf

    reader = gguf.GGUFReader(str(tiny_run / "model.gguf"))
    fields = reader.fields
    k = gguf.Keys.Tokenizer
    want = {
        k.MODEL: gguf.GGUFValueType.STRING,
        k.PRE: gguf.GGUFValueType.STRING,
        k.BOS_ID: gguf.GGUFValueType.UINT32,
        k.EOS_ID: gguf.GGUFValueType.UINT32,
        k.UNK_ID: gguf.GGUFValueType.UINT32,
        k.PAD_ID: gguf.GGUFValueType.UINT32,
        k.ADD_BOS: gguf.GGUFValueType.BOOL,
    }
    for key, vtype in want.items():
        assert fields[key].types == [vtype], f"{key}: {fields[key].types}"
    arrays = {
        k.LIST: gguf.GGUFValueType.STRING,
        k.SCORES: gguf.GGUFValueType.FLOAT32,
        k.TOKEN_TYPE: gguf.GGUFValueType.INT32,
    }
    lengths = set()
    for key, vtype in arrays.items():
        assert fields[key].types == [gguf.GGUFValueType.ARRAY, vtype], f"{key}: {fields[key].types}"
        lengths.add(len(fields[key].data))
    assert len(lengths) == 1, f"tokenizer arrays of different lengths {lengths}"
    assert fields[k.MODEL].contents() == "llama" and fields[k.BOS_ID].contents() == 1
    assert "{instruction}" in fields[Keys.Omnimodel.PROMPT_TEMPLATE].contents()


def test_native_token_ids_equal_python_for_every_suite_instruction(tiny_run):  # noqa: F811
    from omnimodel.archs.openvla_oft.prompt import prompt_ids as build_prompt_ids
    from omnimodel.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_run / "ckpt")
    instructions = _suite_instructions()
    assert len(instructions) == 40
    with runtime.load(tiny_run, n_threads=1) as policy:
        for text in (*instructions, *EXTRA_INSTRUCTIONS):
            want = build_prompt_ids(tok, text)
            got = policy.native_prompt_ids(text).tolist()
            assert got == want, f"{text!r}: native {got} != python {want}"
        # the tiny character vocabulary has no byte tokens: Python writes <unk>, the library refuses in one line
        with pytest.raises(runtime.NativeError, match="cannot encode"):
            policy.native_prompt_ids("put the crème on the plate")


def test_predict_text_equals_predict_ids(tiny_run):  # noqa: F811
    rng = np.random.default_rng(0)
    with runtime.load(tiny_run, n_threads=2) as policy:
        s = policy.image_size
        images = list(rng.integers(0, 256, (policy.n_images, s, s, 3), dtype=np.uint8))
        state = rng.normal(size=policy.proprio_dim).astype(np.float32)
        text = "Put the Bowl on the plate."
        a = policy.predict_text(images, state, text)
        b = policy.predict_ids(images, state, policy.prompt_ids(text))
    assert np.array_equal(a, b)
    # no tokenizer.json anywhere: predict_action tokenises inside the library
    with runtime.NativePolicy(
        tiny_run / "build" / runtime.LIBRARY, tiny_run / "model.gguf", n_threads=2
    ) as bare:
        assert bare.tokenizer is None
        assert np.array_equal(bare.predict_action(images, state, text), a)


def test_policy_cli_instruction_matches_the_runtime(tiny_run, tmp_path):  # noqa: F811
    from PIL import Image

    rng = np.random.default_rng(1)
    with runtime.load(tiny_run, n_threads=2) as policy:
        s, n, dim = policy.image_size, policy.n_images, policy.proprio_dim
        images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
        state = rng.normal(size=dim).astype(np.float32)
        text = "Pick up the Black Bowl, and place it on the plate!"
        want = policy.predict_action(list(images), state, text)
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"cam{i}.png")
        Image.fromarray(img).save(paths[-1])
    args = [
        "run",
        str(tiny_run / "model.gguf"),
        *[a for p in paths for a in ("--image", str(p))],
        "--state",
        ",".join(f"{v:.9g}" for v in state),
        "--instruction",
        text,
        "--threads",
        "2",
    ]
    out = cli(tiny_run / "build", *args)[-1]
    assert out["status"] == "ok", out
    got = np.asarray(out["actions"], np.float32)
    err = float(np.abs(got - want).max())
    assert err <= 1e-6, f"policy_cli --instruction vs Python runtime: max abs err {err:.3g} > 1e-6"
    wrong = tmp_path / "small.png"
    Image.fromarray(images[0][: s // 2]).save(wrong)
    # the CLI's one-line error, through the test helper that asserts a zero exit
    with pytest.raises(AssertionError, match=f"224x112 pixels, the policy takes {s}x{s}"):
        cli(tiny_run / "build", "run", str(tiny_run / "model.gguf"), "--image", str(wrong), "--image", str(paths[1]),
            "--state", ",".join(["0"] * dim), "--instruction", text)  # fmt: skip


def _float_types(tok: dict) -> None:
    """Token types stored as float32 (the token list padded first, so the converter adds nothing)."""
    extra = 576 - len(tok["tokenizer.ggml.tokens"])
    tok["tokenizer.ggml.tokens"] = tok["tokenizer.ggml.tokens"] + [f"[PAD{i}]" for i in range(extra)]
    tok["tokenizer.ggml.scores"] = tok["tokenizer.ggml.scores"] + [0.0] * extra
    tok["tokenizer.ggml.token_type"] = [1.5] * 576


def _convert_with(run, tmp_path, edit) -> str:
    from omnimodel.archs.openvla_oft.metadata import runtime_metadata
    from omnimodel.ggufio import convert

    src = convert.load_source(run / "ckpt")
    edit(src.tokenizer)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "edited.gguf"
    convert.convert(src, path, "f32", metadata=runtime_metadata(src.config, src.stats))
    return str(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.update({"tokenizer.ggml.scores": t["tokenizer.ggml.scores"][:-1]}),
            "scores must be 576 float32",
        ),
        (lambda t: _float_types(t), "token_type must be 576 int32"),
        (lambda t: t.update({"tokenizer.ggml.bos_token_id": 9999}), "bos_token_id = 9999 is outside"),
        (lambda t: t.update({"tokenizer.ggml.tokens": 7}), "tokens is not an array of strings"),
        (lambda t: t["tokenizer.ggml.tokens"].__setitem__(5, "<s>"), "token 5 repeats the text"),
        (lambda t: t.update({"tokenizer.ggml.model": "gpt2"}), 'must be "llama"'),
    ],
)
def test_a_bad_tokenizer_is_refused_in_one_line(tiny_run, tmp_path, edit, message):  # noqa: F811
    path = _convert_with(tiny_run, tmp_path, edit)
    with pytest.raises(runtime.NativeError) as err:
        runtime.NativePolicy(tiny_run / "build" / runtime.LIBRARY, path)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_no_tokenizer_means_token_ids_only(tiny_run, tmp_path, monkeypatch):  # noqa: F811
    path = _convert_with(tiny_run, tmp_path, lambda t: t.clear())
    with runtime.NativePolicy(tiny_run / "build" / runtime.LIBRARY, path) as policy:
        img = np.zeros((policy.image_size, policy.image_size, 3), np.uint8)
        with pytest.raises(runtime.NativeError, match="carries no tokenizer"):
            policy.predict_text([img, img], np.zeros(policy.proprio_dim, np.float32), "open the drawer")
    # a tokenizer but no prompt template (an arch that writes none): loads, and omni_predict_text names the key
    monkeypatch.setattr("omnimodel.archs.openvla_oft.metadata.prompt_metadata", lambda: {})
    path = _convert_with(tiny_run, tmp_path / "nt", lambda t: None)
    with runtime.NativePolicy(tiny_run / "build" / runtime.LIBRARY, path) as policy:
        img = np.zeros((policy.image_size, policy.image_size, 3), np.uint8)
        with pytest.raises(runtime.NativeError, match="has no omnimodel.prompt.template"):
            policy.predict_text([img, img], np.zeros(policy.proprio_dim, np.float32), "open the drawer")


LLAMA_CHECK_C = r"""
/* Opens a GGUF with llama.cpp's own loader, as its tools do; argv: MODEL TEXT [KEY=int:V|str:V ...]. */
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct llama_model * open_model(const char * path, int vocab_only, struct llama_model_kv_override * ov) {
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = vocab_only;
    mp.kv_overrides = ov;
    return llama_model_load_from_file(path, mp);
}

int main(int argc, char ** argv) {
    static struct llama_model_kv_override ov[32];
    int n = 0;
    for (int i = 3; i < argc && n < 31; i++, n++) {
        char * eq = strchr(argv[i], '=');
        *eq = 0;
        snprintf(ov[n].key, sizeof(ov[n].key), "%s", argv[i]);
        if (strncmp(eq + 1, "int:", 4) == 0) { ov[n].tag = LLAMA_KV_OVERRIDE_TYPE_INT; ov[n].val_i64 = atoll(eq + 5); }
        else if (strncmp(eq + 1, "float:", 6) == 0) { ov[n].tag = LLAMA_KV_OVERRIDE_TYPE_FLOAT; ov[n].val_f64 = atof(eq + 7); }
        else { ov[n].tag = LLAMA_KV_OVERRIDE_TYPE_STR; snprintf(ov[n].val_str, sizeof(ov[n].val_str), "%s", eq + 5); }
    }
    llama_backend_init();
    struct llama_model * m = open_model(argv[1], 0, NULL);
    printf("RESULT full_as_is %s\n", m ? "ok" : "failed");
    if (m) llama_model_free(m);
    m = open_model(argv[1], 1, NULL);
    printf("RESULT vocab_only_as_is %s\n", m ? "ok" : "failed");
    if (m) llama_model_free(m);
    m = open_model(argv[1], 1, ov);
    printf("RESULT vocab_only_with_overrides %s\n", m ? "ok" : "failed");
    if (m) {
        llama_token ids[512];
        const char * text = argv[2];
        int k = llama_tokenize(llama_model_get_vocab(m), text, (int) strlen(text), ids, 512, 1, 0);
        printf("TOKENS");
        for (int i = 0; i < k; i++) printf(" %d", ids[i]);
        printf("\n");
        llama_model_free(m);
    }
    m = open_model(argv[1], 0, ov);
    printf("RESULT full_with_overrides %s\n", m ? "ok" : "failed");
    if (m) {
        /* the prompt through llama.cpp's own LLaMA graph: the greedy next token */
        const struct llama_vocab * vocab = llama_model_get_vocab(m);
        llama_token ids[512];
        int k = llama_tokenize(vocab, argv[2], (int) strlen(argv[2]), ids, 512, 1, 0);
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 512;
        cp.n_threads = 1;
        struct llama_context * ctx = llama_init_from_model(m, cp);
        int ok = ctx && llama_decode(ctx, llama_batch_get_one(ids, k)) == 0;
        if (ok) {
            const float * logits = llama_get_logits_ith(ctx, -1);
            int best = 0;
            for (int i = 1; i < llama_vocab_n_tokens(vocab); i++) if (logits[i] > logits[best]) best = i;
            printf("RESULT decode ok\nNEXT %d\n", best);
        } else {
            printf("RESULT decode failed\n");
        }
        if (ctx) llama_free(ctx);
        llama_model_free(m);
    }
    return 0;
}
"""

LLAMA_CHECK_CMAKE = """cmake_minimum_required(VERSION 3.16)
project(llama_check C CXX)
set(LLAMA_DIR "" CACHE PATH "libllama prefix")
find_package(ggml REQUIRED)
find_package(Threads REQUIRED)
add_executable(llama_check main.c)
target_include_directories(llama_check PRIVATE "${LLAMA_DIR}/include")
target_link_libraries(llama_check PRIVATE "${LLAMA_DIR}/lib/libllama.a" ggml::ggml ggml::ggml-base Threads::Threads stdc++ m)
"""


def test_llama_cpp_opens_our_gguf_vocabulary_not_the_whole_model(tiny_run, tmp_path):  # noqa: F811
    """What llama.cpp's own loader makes of model.gguf (issue 19's check; the report quotes the output).

    As is, llama.cpp refuses it: general.architecture is ours. With the architecture overridden to
    "llama" the vocabulary opens and tokenises as the Python path does. The whole model does not
    open even with the architecture and LLaMA sizes overridden: the LLaMA hyper-parameters live
    under our arch's keys (llama.cpp reads the per-layer head count only from the file), and the
    file also holds the vision towers, projector and action head. The LLaMA trunk written alone
    (llama.* keys, the same tensors and tokenizer keys) opens and decodes the prompt in llama.cpp.
    """
    import json

    from omnimodel.archs.openvla_oft.prompt import PROMPT_TEMPLATE
    from omnimodel.archs.openvla_oft.prompt import prompt_ids as build_prompt_ids
    from omnimodel.models.tokenizer import load_tokenizer
    from omnimodel.sandbox import get_sandbox
    from omnimodel.sandbox.cmake_project import compile_and_run_cmake_project
    from omnimodel.toolchain import ensure_ggml_build

    cfg = json.loads(
        __import__("gguf").GGUFReader(str(tiny_run / "model.gguf")).fields["omnimodel.config_json"].contents()
    )
    text = PROMPT_TEMPLATE.format(instruction="put the bowl on the plate")
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.c").write_text(LLAMA_CHECK_C)
    (src / "CMakeLists.txt").write_text(LLAMA_CHECK_CMAKE)
    tc = cfg.get("text_config", cfg)
    hp = {"embedding_length": tc["hidden_size"], "block_count": tc["num_hidden_layers"],
          "feed_forward_length": tc["intermediate_size"], "attention.head_count": tc["num_attention_heads"],
          "attention.head_count_kv": tc.get("num_key_value_heads", tc["num_attention_heads"]),
          "context_length": tc.get("max_position_embeddings", 2048)}  # fmt: skip
    overrides = ["general.architecture=str:llama", *[f"llama.{k}=int:{v}" for k, v in hp.items()],
                 f"llama.attention.layer_norm_rms_epsilon=float:{tc.get('rms_norm_eps', 1e-6)}"]  # fmt: skip
    gguf_path = (tiny_run / "model.gguf").resolve()
    box = get_sandbox("auto")
    res = compile_and_run_cmake_project(
        src, tmp_path / "build", box, ensure_ggml_build("cpu", box),
        run=["llama_check", str(gguf_path), text, *overrides], ro_mounts={gguf_path: str(gguf_path)},
    )  # fmt: skip
    assert res.ok, (res.failed_step()[1].stdout + res.failed_step()[1].stderr)[-3000:]
    out = res.run.stdout + res.run.stderr
    results = dict(line.split()[1:3] for line in res.run.stdout.splitlines() if line.startswith("RESULT"))
    (tmp_path / "llama_check.log").write_text(out)
    print(out)
    assert results == {"full_as_is": "failed", "vocab_only_as_is": "failed", "vocab_only_with_overrides": "ok",
                       "full_with_overrides": "failed"}, out[-3000:]  # fmt: skip
    assert "unknown model architecture: 'openvla-oft'" in out
    tokens = [
        int(t) for t in next(ln for ln in res.run.stdout.splitlines() if ln.startswith("TOKENS")).split()[1:]
    ]
    python = build_prompt_ids(load_tokenizer(tiny_run / "ckpt"), "put the bowl on the plate")
    assert tokens == python[: len(tokens)] and len(python) == len(tokens) + 1  # + the '▁' the policy appends
    # The trunk alone (llama.* keys, the same LLaMA tensors and tokenizer) opens and runs in llama.cpp.
    trunk = (tmp_path / "trunk.gguf").resolve()
    _llama_trunk(gguf_path, trunk)
    ggml = ensure_ggml_build("cpu", box)
    again = box.run(
        [str(tmp_path / "build" / "llama_check"), str(trunk), text], tmp_path / "build", timeout_s=300, memory_mb=4096,
        ro_mounts={trunk: str(trunk), ggml.prefix: str(ggml.prefix)}, env={"LD_LIBRARY_PATH": str(ggml.lib_dir)},
    )  # fmt: skip
    (tmp_path / "llama_check_trunk.log").write_text(again.stdout + again.stderr)
    print(again.stdout)
    trunk_results = dict(line.split()[1:3] for line in again.stdout.splitlines() if line.startswith("RESULT"))
    assert trunk_results.get("full_as_is") == "ok" and trunk_results.get("decode") == "ok", (
        again.stdout + again.stderr
    )[-3000:]
    # ... and its greedy next token is PyTorch's: the LLaMA of the checkpoint, causal, on the same ids
    import torch

    from omnimodel.archs.openvla_oft.checkpoint import load_model

    llm = load_model(tiny_run / "ckpt", torch.float32).language_model.eval()
    ids = torch.tensor([tokens])
    n = ids.shape[1]
    causal = torch.full((1, 1, n, n), float("-inf")).triu(1)
    with torch.no_grad():
        logits = llm(input_ids=ids, attention_mask=causal, use_cache=False).logits[0, -1]
    nxt = int(next(ln for ln in again.stdout.splitlines() if ln.startswith("NEXT")).split()[1])
    assert nxt == int(logits.argmax()), f"llama.cpp next token {nxt}, PyTorch {int(logits.argmax())}"


def _llama_trunk(src, out) -> None:
    """model.gguf's LLaMA trunk alone as a general.architecture=llama GGUF (llama.* keys, same tensors and tokenizer)."""
    import re

    import gguf

    reader = gguf.GGUFReader(str(src))
    fields = reader.fields

    def ours(suffix):
        return next(f.contents() for k, f in fields.items() if k.endswith(".llm." + suffix))

    trunk = re.compile(r"(token_embd|output_norm|output|blk\.\d+\.\w+)\.weight")
    tensors = [t for t in reader.tensors if trunk.fullmatch(t.name)]
    shape = {t.name: [int(x) for x in t.shape] for t in tensors}  # GGML order: ne0 first
    w = gguf.GGUFWriter(str(out), arch="llama")
    w.add_context_length(ours("context_length"))
    w.add_embedding_length(shape["token_embd.weight"][0])
    w.add_block_count(len({t.name.split(".")[1] for t in tensors if t.name.startswith("blk.")}))
    w.add_feed_forward_length(shape["blk.0.ffn_up.weight"][1])
    w.add_head_count(ours("head_count"))
    w.add_head_count_kv(ours("head_count_kv"))
    w.add_layer_norm_rms_eps(ours("rms_norm_epsilon"))
    w.add_rope_freq_base(ours("rope_freq_base"))
    for key, f in fields.items():
        if key.startswith("tokenizer.ggml."):
            vtype = f.types[0]
            sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, f.contents(), vtype, sub_type=sub)
    for t in tensors:
        w.add_tensor(t.name, np.asarray(t.data).reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_sentencepiece_checkpoint_tokenises_as_sentencepiece(tiny_run, tmp_path):  # noqa: F811
    """The OpenVLA family ships tokenizer.model: a small BPE SentencePiece with byte fallback, as LLaMA-2's is."""
    import shutil

    from conftest import require

    try:
        import sentencepiece as spm
    except ImportError:
        spm = None
    require(spm is not None, "the sentencepiece package (reads tokenizer.model)")
    from omnimodel.archs.openvla_oft.metadata import runtime_metadata
    from omnimodel.archs.openvla_oft.prompt import PROMPT_TEMPLATE
    from omnimodel.ggufio import convert

    corpus = tmp_path / "corpus.txt"
    instructions = _suite_instructions()
    corpus.write_text("\n".join(PROMPT_TEMPLATE.format(instruction=t.lower()) for t in instructions * 5))
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_run / "ckpt", ckpt)
    (ckpt / "tokenizer.json").unlink()
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(ckpt / "tokenizer"), vocab_size=300, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, minloglevel=2, split_digits=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity",
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    src = convert.load_source(ckpt)
    assert src.tokenizer["tokenizer.ggml.tokens"][512] == "<PAD>"  # added_tokens.json, past the 300 pieces
    convert.convert(src, tmp_path / "sp.gguf", "f32", metadata=runtime_metadata(src.config, src.stats))
    space = sp.piece_to_id("\u2581")
    with runtime.NativePolicy(tiny_run / "build" / runtime.LIBRARY, tmp_path / "sp.gguf") as policy:
        for text in (
            *instructions,
            *EXTRA_INSTRUCTIONS,
            "Café CRÈME — Über 10 °C, ΣΟΦΊΑ",
            "Put the CRÈME BRÛLÉE on the plate",
        ):
            want = [1, *sp.encode(PROMPT_TEMPLATE.format(instruction=text.lower()))]
            want += [space] if want[-1] != space else []
            got = policy.native_prompt_ids(text).tolist()
            assert got == want, f"{text!r}: native {got} != sentencepiece {want}"


def test_a_paligemma_shaped_tokenizer_has_no_space_prefix(tiny_run, tmp_path):  # noqa: F811
    """π0's character tokenizer (PaliGemma conventions: Replace(' ', '▁'), no dummy prefix) through llama.cpp."""
    import shutil

    from omnimodel.archs.openvla_oft.metadata import runtime_metadata
    from omnimodel.archs.openvla_oft.prompt import PROMPT_TEMPLATE
    from omnimodel.archs.pi0.tokenizer import build_char_tokenizer, save_tokenizer_files
    from omnimodel.ggufio import convert
    from omnimodel.models.tokenizer import SPACE

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_run / "ckpt", ckpt)
    for f in ("tokenizer.json", "added_tokens.json"):
        (ckpt / f).unlink()
    tok = build_char_tokenizer(400)
    save_tokenizer_files(tok, ckpt, 64)
    src = convert.load_source(ckpt)
    assert src.tokenizer["tokenizer.ggml.add_space_prefix"] is False
    assert src.tokenizer["tokenizer.ggml.bos_token_id"] == 2
    convert.convert(src, tmp_path / "pg.gguf", "f32", metadata=runtime_metadata(src.config, src.stats))
    space = tok.token_to_id(SPACE)
    with runtime.NativePolicy(tiny_run / "build" / runtime.LIBRARY, tmp_path / "pg.gguf") as policy:
        for text in (*_suite_instructions(), *EXTRA_INSTRUCTIONS):
            want = tok.encode(PROMPT_TEMPLATE.format(instruction=text.lower())).ids
            want += [space] if want[-1] != space else []
            got = policy.native_prompt_ids(text).tolist()
            assert got == want, f"{text!r}: native {got} != python {want}"
