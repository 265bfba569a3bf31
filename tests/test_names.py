"""The name table: every checkpoint key named once, C identifiers, runtime keys from KEYS, each value written once."""

from __future__ import annotations

import re
import string

import gguf
import pytest

from omnimodel import archs
from omnimodel.ggufio import convert
from omnimodel.ggufio.constants import GGUF_NAME_MAX, Keys, arch_key
from omnimodel.models.zoo import random_stats
from omnimodel.skills import load_skills, match_skill

PRESET = "openvla-oft-tiny"
C_IDENT = re.compile(r"[A-Z][A-Z0-9_]*")


@pytest.fixture(scope="module")
def arch():
    return archs.for_preset(PRESET)


@pytest.fixture(scope="module")
def model(arch):
    return arch.random_model(PRESET, 0)[0]


def _fill(template: str) -> str:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    return template.format(**{f: ("v" if f == "tower" else 0) for f in fields})


def generic_keys() -> set[str]:
    return {v for group in (Keys.General, Keys.Omnimodel) for k, v in vars(group).items() if k.isupper()}


def test_every_checkpoint_key_maps_to_names_without_collisions(arch, model):
    owner: dict[str, str] = {}
    unnamed = []
    for key, value in model.state_dict().items():
        targets = arch.gguf_names(key)
        if not targets:
            unnamed.append(key)
            continue
        assert len(targets) in (1, 3), f"{key}: {targets}"
        if len(targets) == 3:
            assert value.shape[0] % 3 == 0, f"{key}: fused rows {value.shape[0]} do not split in three"
        for t in targets:
            assert t not in owner, f"{t} named twice: by {owner.get(t)} and {key}"
            assert len(t) <= GGUF_NAME_MAX, t
            owner[t] = key
    # only the SigLIP pooling head is in the checkpoint and never run
    assert unnamed and all(".attn_pool." in k for k in unnamed), unnamed
    _, tensors = arch.name_table()
    full = {_fill(v) for v in tensors.values()}
    named = {re.sub(r"\.blk\.\d+\.", ".blk.0.", re.sub(r"^v2\.", "v.", n)) for n in owner}
    named = {re.sub(r"^blk\.\d+\.", "blk.0.", n) for n in named}
    assert named <= full, f"names outside TENSORS: {sorted(named - full)[:5]}"


def test_unknown_keys_fail_or_keep_their_role(arch):
    assert arch.gguf_names("proprio_projector.ls.scale_factor") == ["proprio.ls.scale_factor"]
    assert arch.gguf_names("language_model.model.layers.3.film.gamma") == ["blk.3.film.gamma"]
    with pytest.raises(KeyError):
        arch.gguf_names("some_new_top_module.weight")
    with pytest.raises(KeyError):
        arch.gguf_names("proprio_projector." + "x" * 70)


def test_keys_and_tensors_are_c_identifiers_with_known_placeholders(arch):
    keys, tensors = arch.name_table()
    assert keys and tensors
    for ident, value in [*keys.items(), *tensors.items()]:
        assert C_IDENT.fullmatch(ident), f"{ident!r} is not an upper-case C identifier"
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        assert fields <= {"bid", "tower"}, f"{ident}: placeholders {fields}"
    assert tensors["BLK_ATTN_Q_WEIGHT"] == "blk.{bid}.attn_q.weight"
    assert keys["LLM_BLOCK_COUNT"] == "llm.block_count"


def test_runtime_metadata_keys_come_from_keys(arch, model):
    from omnimodel.models.tokenizer import prompt_metadata

    keys, _ = arch.name_table()
    allowed = set()
    for template in keys.values():
        for tower in ("v", "v2"):
            allowed.add(arch_key(arch.name, template.format(tower=tower)))
    allowed |= set(
        prompt_metadata("{instruction}")
    )  # the generic prompt keys omni_predict_text reads (omnimodel.prompt.*)
    meta = arch.runtime_metadata(model.cfg, random_stats(0, model.cfg.action_dim, model.cfg.proprio_dim))
    assert set(meta) <= allowed, sorted(set(meta) - allowed)
    assert set(meta) == allowed  # with statistics, every key the graph reads is written


def test_converted_gguf_writes_each_value_once(arch, tmp_path):
    src = convert.load_source(PRESET)
    res = convert.convert(src, tmp_path / "m.gguf", "f32")
    fields = [
        f.name for f in gguf.GGUFReader(str(res.path)).fields.values() if not f.name.startswith("GGUF.")
    ]
    assert len(fields) == len(set(fields))
    keys, _ = arch.name_table()
    arch_keys = {arch_key(arch.name, t.format(tower=tw)) for t in keys.values() for tw in ("v", "v2")}
    stray = [f for f in fields if f not in arch_keys and f not in generic_keys()]
    assert not stray, f"keys outside the name table: {stray}"
    # no LLM size under a second spelling (llama.cpp's llm.attention.* etc.)
    assert not [f for f in fields if ".attention." in f or ".config." in f]


def test_skill_tensor_maps_agree_with_the_name_table(arch, model):
    """A skill's tensor_map `gguf` is the suffix under its module's role prefix (arch.module_prefix)."""
    skills = load_skills()
    checked = 0
    realised: list[str] = []  # modules a skill realises: their children are not planned (as the planner does)
    for name, mod in model.named_modules():
        if any(name.startswith(r + ".") for r in realised if r):
            continue
        params = [p for p, _ in mod.named_parameters()]
        skill = match_skill(type(mod).__name__, params, skills)
        if skill is None or skill.name not in arch.graph_skills():
            continue
        if name:
            realised.append(name)
        prefix = arch.module_prefix(name)
        assert prefix is not None, f"{name}: no role prefix"
        for param, entry in skill.tensor_map.items():
            bids = re.findall(r"\d+", name) or ["0"]
            concrete = param.replace("{N}", "0")
            key = f"{name}.{concrete}" if name else concrete
            if key not in model.state_dict():
                continue  # a spelling variant (ls1.gamma) this checkpoint does not use
            suffixes = [entry.gguf.replace("{N}", "0")]
            m = re.fullmatch(r"(.*)\{(.+)\}(.*)", suffixes[0])
            if m:
                suffixes = [m.group(1) + x + m.group(3) for x in m.group(2).split(",")]
            want = arch.gguf_names(key)
            assert want == [prefix + s for s in suffixes], (
                f"skill {skill.name}, {key}: tensor_map gives {[prefix + s for s in suffixes]}, name table {want}"
                f" (block {bids[-1]})"
            )
            checked += 1
    assert checked > 20
