"""`omnimodel zoo make PRESET DIR --set key=value`: custom sizes through config.json's own checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omnimodel.archs.openvla_oft.checkpoint import (
    check_layer_counts,
    config_from_json,
    config_to_json,
    read_config,
    tensor_names,
)
from omnimodel.archs.openvla_oft.model import preset
from omnimodel.archs.overrides import apply_sets
from omnimodel.errors import ConfigError

BASE = {"text_config": {"num_hidden_layers": 2, "rms_norm_eps": 1e-6}, "towers": [{"depth": 3}, {"depth": 3}], "name": "x"}


def test_sets_parse_json_values_and_keep_the_original():
    out = apply_sets(BASE, ["text_config.num_hidden_layers=4", "towers.1.depth=6", "text_config.rms_norm_eps=1e-5", "name=my size"])
    assert out == {"text_config": {"num_hidden_layers": 4, "rms_norm_eps": 1e-5}, "towers": [{"depth": 3}, {"depth": 6}], "name": "my size"}
    assert BASE["text_config"]["num_hidden_layers"] == 2


@pytest.mark.parametrize(
    "item, needle",
    [
        ("text_config.num_layers=4", "no key text_config.num_layers; keys there: num_hidden_layers, rms_norm_eps"),
        ("towers.2.depth=1", "towers.2: expected an index below 2"),
        ("towers.x.depth=1", "towers.x: expected an index below 2"),
        ("name.first=1", "name holds a value, not an object or a list"),
        ("depth", "expected KEY=VALUE"),
        ("text_config..x=1", "expected KEY=VALUE"),
    ],
)
def test_bad_set_is_one_configerror_line(item, needle):
    with pytest.raises(ConfigError) as err:
        apply_sets(BASE, [item])
    assert "\n" not in str(err.value) and needle in str(err.value), str(err.value)


def test_a_resized_known_tower_keeps_its_sizes_in_config_json():
    cfg = preset("openvla-oft")  # towers named by their timm ids, which imply the released sizes
    assert "omnimodel_towers" not in config_to_json(cfg)
    cfg.siglip.depth = 2
    assert config_from_json(config_to_json(cfg)).siglip.depth == 2


def test_make_with_sets_writes_a_checkpoint_that_reads_back(tmp_path):
    sets = ("text_config.num_hidden_layers=3", "omnimodel_towers.1.depth=2", "text_config.rms_norm_eps=1e-5")
    from omnimodel import archs

    ckpt = archs.for_preset("openvla-oft-tiny").make_checkpoint("openvla-oft-tiny", tmp_path / "ckpt", sets=sets)
    cfg = read_config(ckpt)
    assert (cfg.layers, cfg.siglip.depth, cfg.dino.depth, cfg.rms_eps) == (3, 2, 3, 1e-5)
    check_layer_counts(cfg, tensor_names(ckpt), "config.json")  # the weights hold what config.json says


def _cli(*args, cwd):
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "omnimodel.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_cli_bad_set_is_one_line_exit_2_and_no_directory(tmp_path):
    item, needle = "text_config.num_hidden_layers=0", "--set: text_config.num_hidden_layers = 0: expected an integer in [1, 1024]; fix the --set value"
    res = _cli("zoo", "make", "openvla-oft-tiny", str(tmp_path / "ckpt"), "--set", item, cwd=tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], res.stderr[-2000:]
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == []


def test_a_set_that_breaks_divisibility_is_refused_before_any_file(tmp_path):
    from omnimodel import archs

    with pytest.raises(ConfigError, match=r"omnimodel_towers\[0\].width = 250 is not divisible by omnimodel_towers\[0\].heads = 4"):
        archs.get("openvla-oft").make_checkpoint("openvla-oft-tiny", tmp_path / "ckpt", sets=("omnimodel_towers.0.width=250",))
    assert not any(tmp_path.iterdir())


def test_an_arch_without_custom_sizes_says_so():
    from omnimodel.archs.base import Arch

    class Fixed(Arch):
        def make_checkpoint(self, preset, out_dir, seed=0):
            raise AssertionError("not called")

    Fixed.__abstractmethods__ = frozenset()
    assert not Fixed().takes_sets()


@pytest.mark.parametrize("preset_name, arch", [("openvla-tiny", "openvla"), ("openvla-oft-tiny", "openvla-oft")])
def test_a_renamed_checkpoint_is_still_claimed_by_its_arch(tmp_path, preset_name, arch):
    from omnimodel import archs

    ckpt = archs.get(arch).make_checkpoint(preset_name, tmp_path / "ckpt", sets=("omnimodel_preset=my-size",))
    assert archs.for_checkpoint(ckpt).name == arch and archs.get(arch).read_config(ckpt).name == "my-size"
