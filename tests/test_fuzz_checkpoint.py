"""Seeded fuzzing of a checkpoint's shard index and config.json through the OpenVLA-OFT loader.

Shard paths with `..`, absolute paths and symlinks leaving the checkpoint directory must be
refused; every other case ends in success or a project error, within a per-case time limit.
"""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch
from test_fuzz_readers import CASES, mutate_bytes, run_cases

from omnimodel.archs.openvla_oft.checkpoint import INDEX_FILE, load_model, read_state_dict
from omnimodel.errors import CheckpointError
from omnimodel.models import zoo


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return zoo.make_checkpoint("openvla-oft-tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture
def work(tiny_ckpt, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    (tmp_path / "outside").mkdir()
    shutil.copy(sorted(ckpt.glob("model-*.safetensors"))[0], tmp_path / "outside" / "stolen.safetensors")
    return ckpt


ESCAPES = ("../outside/stolen.safetensors", "/etc/passwd", "{abs}/../outside/stolen.safetensors", "sub/../../outside/x")


def _shard_name(rng: random.Random, ckpt, shards: list[str]) -> tuple[object, bool]:
    """A replacement shard name and whether it leaves the checkpoint directory."""
    kind = rng.choice(("escape", "link_out", "link_in", "missing", "junk", "real"))
    if kind == "escape":
        return rng.choice(ESCAPES).format(abs=ckpt), True
    if kind == "link_out":
        name = f"lnk{rng.randrange(4)}.safetensors"
        (ckpt / name).unlink(missing_ok=True)
        (ckpt / name).symlink_to(ckpt.parent / "outside" / "stolen.safetensors")
        return name, True
    if kind == "link_in":
        name = f"lnk{rng.randrange(4)}.safetensors"
        (ckpt / name).unlink(missing_ok=True)
        (ckpt / name).symlink_to(rng.choice(shards))
        return name, False
    if kind == "missing":
        return rng.choice(("nope.safetensors", "", ".", "config.json", "a\x00b")), False
    if kind == "junk":
        return rng.choice((5, None, [], {}, True, 1.5)), False
    return rng.choice(shards), False


def test_fuzz_shard_index(work, record_property):
    ckpt = work
    good = json.loads((ckpt / INDEX_FILE).read_text())
    shards = sorted(set(good["weight_map"].values()))
    escaped = {"refused": 0}

    def case(rng, note):
        for p in ckpt.glob("lnk*.safetensors"):
            p.unlink()
        index = json.loads(json.dumps(good))
        leaves = False
        op = rng.choice(("names", "names", "names", "structure", "bytes"))
        note.append(op)
        if op == "names":
            keys = list(index["weight_map"])
            for key in rng.sample(keys, rng.randint(1, 3)):
                name, out = _shard_name(rng, ckpt, shards)
                note.append(repr(name))
                index["weight_map"][key] = name
                leaves |= out
            raw = json.dumps(index)
        elif op == "structure":
            choice = rng.randrange(5)
            if choice == 0:
                index["weight_map"] = rng.choice(([], "x", 3, None, {}))
            elif choice == 1:
                index.pop("weight_map")
            elif choice == 2:
                index = rng.choice(([], "x", 3, None))
            elif choice == 3:
                index["weight_map"].pop(rng.choice(list(index["weight_map"])))
            else:
                index["weight_map"][f"extra.{rng.randrange(9)}"] = rng.choice(shards)
            raw = json.dumps(index)
        else:
            raw, what = mutate_bytes(rng, json.dumps(good).encode(), 4000)
            note.append(what)
            raw = raw.decode("utf-8", "replace")
        (ckpt / INDEX_FILE).write_text(raw)
        try:
            state = read_state_dict(ckpt)
        except CheckpointError:
            escaped["refused"] += leaves
            raise
        assert not leaves, "a shard path leaving the checkpoint directory was read"
        assert state, "an empty state dict"

    run_cases("shard_index", CASES, case, record_property)
    assert escaped["refused"] > 50, "too few escaping paths were tried"
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt", "outside"]


POISON = (0, -1, 1, 2, 3, 4, 7, 64, 10**7, 2**63, 2.5, math.nan, math.inf, "abc", "", None, True, False, [], [1, 2], {}, {"x": 1})


def _mutate_config(rng: random.Random, cfg: dict, note: list) -> dict:
    c = json.loads(json.dumps(cfg))
    op = rng.choice(("text", "text", "tower", "tower", "top", "section", "drop", "unknown"))
    note.append(op)
    text = c.setdefault("text_config", {})
    text_keys = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings"]
    tower_keys = ["width", "depth", "heads", "mlp", "patch", "image", "n_registers", "class_token", "layer_scale",
                  "attn_pool", "ln_eps", "timm_id"]
    if op == "text":
        key = rng.choice(text_keys)
        text[key] = rng.choice(POISON)
        note.append(f"text_config.{key}={text[key]!r}")
    elif op == "tower":
        i, key = rng.randrange(2), rng.choice(tower_keys)
        c["omnimodel_towers"][i][key] = rng.choice(POISON)
        note.append(f"tower[{i}].{key}={c['omnimodel_towers'][i][key]!r}")
    elif op == "top":
        key = rng.choice(("pad_token_id", "pad_to_multiple_of", "omnimodel_preset", "timm_model_ids",
                          "omnimodel_custom_modules"))
        c[key] = rng.choice(POISON + ({"proprio_projector": rng.choice(POISON)},
                                      {"proprio_projector": {"file": rng.choice(POISON), "class": "X"}}))
        note.append(f"{key}={c[key]!r}")
    elif op == "section":
        key = rng.choice(("text_config", "omnimodel_towers"))
        c[key] = rng.choice(POISON + ([{}, {}], [{"width": 4}, 1]))
        note.append(f"{key}={c[key]!r}")
    elif op == "drop":
        section = rng.choice((c, text, c["omnimodel_towers"][0]))
        if section:
            section.pop(rng.choice(list(section)))
    else:
        rng.choice((c, text, c["omnimodel_towers"][1]))[f"zz{rng.randrange(9)}"] = rng.choice(POISON)
    return c


def test_fuzz_config_json(work, record_property):
    ckpt = work
    good = json.loads((ckpt / "config.json").read_text())
    good_bytes = json.dumps(good).encode()

    def case(rng, note):
        if rng.random() < 0.8:
            raw = json.dumps(_mutate_config(rng, good, note))
        else:
            data, what = mutate_bytes(rng, good_bytes, len(good_bytes))
            note.append(what)
            raw = data.decode("utf-8", "replace")
        (ckpt / "config.json").write_text(raw)
        load_model(ckpt, torch.bfloat16)  # the stored dtype: the same checks and build, without a 0.6 s cast per case

    run_cases("config_json", CASES, case, record_property)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt", "outside"]
