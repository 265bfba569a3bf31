"""An --out that cannot be written is one ConfigError line before any work, for every command that writes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from omnimodel import cli
from omnimodel.atomic import check_writable
from omnimodel.errors import ConfigError

UNWRITABLE = "/proc/omnimodel-nope"  # /proc takes no new folders, even for root


def test_check_writable(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert check_writable(tmp_path / "new" / "x.gguf") == tmp_path / "new" / "x.gguf"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == []  # the probe is gone
    cases = [
        (dict(path=tmp_path), "is a folder; give a file name"),
        (dict(path=afile, want_dir=True), "is a file, not a folder"),
        (dict(path=afile / "run", want_dir=True), f"cannot write there ({afile} is a file)"),
        (dict(path=f"{UNWRITABLE}/x.gguf"), "cannot write there (No such file or directory)"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(ConfigError) as err:
            check_writable(**kwargs)
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ["quantize", "openvla-oft-tiny", "--out", f"{UNWRITABLE}/x.gguf"],
        ["eval", "{tmp}", "--out", f"{UNWRITABLE}/eval.json"],
        ["suite", "export", "--out", UNWRITABLE, "--episodes-per-task", "1"],
        ["export", "{tmp}", "--out", f"{UNWRITABLE}/exp"],
        ["train", "--out", f"{UNWRITABLE}/ckpt"],
        ["port", "openvla-oft", "--sandbox", "local", "--out", f"{UNWRITABLE}/run"],
    ],
)
def test_unwritable_out_is_refused_before_work(tmp_path, monkeypatch, args):
    import omnimodel.port as port_mod

    monkeypatch.setattr(port_mod, "_check_sandbox", lambda kind: None)  # the sandbox is not what is tested here
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli.app, [a.format(tmp=tmp_path) for a in args])
    assert isinstance(res.exception, ConfigError), (res.exception, res.output[-2000:])
    assert f"{UNWRITABLE}" in str(res.exception) and "cannot write there" in str(res.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "COLUMNS": "400"}
    res = subprocess.run([sys.executable, "-m", "omnimodel.cli", "quantize", "openvla-oft-tiny", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and lines == [f"error: --out {tmp_path}: is a folder; give a file name"], res.stderr[-2000:]
