"""Hostile or broken config.json fields give one ConfigError line before any module is built."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from omnimodel.archs import validate
from omnimodel.archs.openvla_oft.checkpoint import config_from_json, load_model
from omnimodel.errors import ConfigError
from omnimodel.models import zoo


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return zoo.make_checkpoint("openvla-oft-tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _edit(ckpt, tmp_path, change):
    out = tmp_path / "ckpt"
    shutil.copytree(ckpt, out)
    cfg = json.loads((out / "config.json").read_text())
    change(cfg)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def _set_text(key, value):
    return lambda c: c.setdefault("text_config", {}).__setitem__(key, value)


def _set_tower(key, value, i=0):
    return lambda c: c["omnimodel_towers"][i].__setitem__(key, value)


CASES = {
    "layers 10^7": (_set_text("num_hidden_layers", 10_000_000), "text_config.num_hidden_layers = 10000000"),
    "tower depth 10^7": (_set_tower("depth", 10**7), "omnimodel_towers[0].depth = 10000000"),
    "zero heads": (_set_text("num_attention_heads", 0), "text_config.num_attention_heads = 0"),
    "hidden abc": (_set_text("hidden_size", "abc"), "text_config.hidden_size = 'abc'"),
    "text_config list": (lambda c: c.__setitem__("text_config", [1, 2]), "text_config = [1, 2]"),
    "unknown tower key": (_set_tower("wings", 2, 1), "unknown key omnimodel_towers[1].wings"),
    "negative mlp": (_set_text("intermediate_size", -5), "text_config.intermediate_size = -5"),
    "float layers": (_set_text("num_hidden_layers", 2.5), "text_config.num_hidden_layers = 2.5"),
    "bool heads": (_set_tower("heads", True), "omnimodel_towers[0].heads = True"),
    "heads not dividing": (_set_text("num_attention_heads", 3), "not divisible by text_config.num_attention_heads = 3"),
    "kv heads not dividing": (_set_text("num_key_value_heads", 3), "not divisible by text_config.num_key_value_heads = 3"),
    "tower heads not dividing": (_set_tower("heads", 5), "omnimodel_towers[0].width = 256 is not divisible"),
    "towers not a list": (lambda c: c.__setitem__("omnimodel_towers", {"a": 1}), "omnimodel_towers = {'a': 1}"),
    "tower not an object": (lambda c: c["omnimodel_towers"].__setitem__(0, 7), "omnimodel_towers[0] = 7"),
    "nan eps": (_set_text("rms_norm_eps", float("nan")), "text_config.rms_norm_eps = nan"),
    "pad id past vocab": (lambda c: c.__setitem__("pad_token_id", 10**6), "pad_token_id = 1000000"),
    "custom modules not an object": (lambda c: c.__setitem__("omnimodel_custom_modules", [1]), "omnimodel_custom_modules = [1]"),
    "custom module without file": (
        lambda c: c.__setitem__("omnimodel_custom_modules", {"proprio_projector": {"class": "X"}}),
        "omnimodel_custom_modules.proprio_projector.file missing",
    ),
    "layers disagree with weights": (_set_text("num_hidden_layers", 3), "hold 2 LLaMA layers"),
    "depth disagrees with weights": (_set_tower("depth", 5, 1), "hold 3 SigLIP blocks"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_field_is_one_configerror_line_before_building(tiny_ckpt, tmp_path, case):
    change, needle = CASES[case]
    ckpt = _edit(tiny_ckpt, tmp_path, change)
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_model(ckpt)
    msg = str(err.value)
    assert time.monotonic() - start < 10, "the check must come before any module is built"
    assert "\n" not in msg and needle in msg, msg
    assert msg.startswith(str(ckpt / "config.json")) and "fix config.json" in msg, msg


def test_released_style_config_without_towers_still_loads(tiny_ckpt):
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    released = {k: v for k, v in cfg.items() if k != "omnimodel_towers"}
    released["timm_model_ids"] = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    out = config_from_json(released)
    assert (out.dino.width, out.siglip.depth, out.layers) == (1024, 27, 2)
    released["timm_model_ids"] = [["x"], "vit_so400m_patch14_siglip_224"]
    with pytest.raises(ConfigError, match=r"timm_model_ids\[0\] = \['x'\]"):
        config_from_json(released)


def test_checker_primitives():
    f = validate.Field("n", int, 1, 8)
    assert validate.check_value("c.json", "n", 8, f) == 8
    for bad in (0, 9, "1", 1.0, None, True):
        with pytest.raises(ConfigError, match="expected an integer in \\[1, 8\\]"):
            validate.check_value("c.json", "n", bad, f)
    assert validate.check_value("c.json", "n", None, validate.Field("n", int, nullable=True)) is None
    with pytest.raises(ConfigError, match="n = None: expected an integer"):
        validate.check_value("c.json", "n", None, validate.Field("n", int, optional=True))
    with pytest.raises(ConfigError, match="missing"):
        validate.check_section("c.json", {}, [f])
    with pytest.raises(ConfigError, match="unknown key x"):
        validate.check_section("c.json", {"n": 2, "x": 1}, [f], closed=True)
    assert validate.check_section("c.json", {"n": 2, "x": 1}, [f]) == {"n": 2}
    with pytest.raises(ConfigError, match="= 10 is not divisible by h = 4"):
        validate.check_divides("c.json", "w", 10, "h", 4)


@pytest.mark.parametrize(
    "norm_stats, needle",
    [([1], "norm_stats = [1]: expected a JSON object"), ({"d": {"action": {"q01": [1]}}}, "norm_stats.d.action.q01 = [1]: expected a list of 7")],
)
def test_openvla_norm_stats_are_checked_with_the_config(tmp_path, norm_stats, needle):
    from omnimodel import archs
    from omnimodel.port import bundled_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundled_checkpoint("openvla"), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["norm_stats"] = norm_stats
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as err:
        archs.get("openvla").read_config(ckpt)  # what `port` checks before the run dir exists
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
