"""`omnimodel port` with bad inputs fails before anything is written; a failed run is marked and re-reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "COLUMNS": "400",
        **(env or {}),
    }  # one logical line must not be wrapped by the terminal width
    return subprocess.run(
        [sys.executable, "-m", "omnimodel.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def _error_lines(res: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.strip()]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--quant", "bogus"], "unknown quantizer 'bogus': use one of f32, f16"),
        (["--quant", "actquant:3.0"], "needs calibration demonstrations: pass --calib DIR"),
        (["--quant", "actquant"], "actquant needs a bits-per-weight budget"),
        (["--quant", "rtn:q9_k"], "unknown GGML type 'q9_k'"),
        (["--quant", "actquant:3.0", "--calib", "{tmp}/no-demos"], "demonstration directory"),
        (["--backend", "tpu"], "unknown backend 'tpu'"),
        (["--sandbox", "vm"], "unknown sandbox 'vm'"),
        (["--checkpoint", "{tmp}/no-ckpt"], "no such checkpoint directory"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path, args, needle):
    run = tmp_path / "run"
    res = _cli(
        "port", "openvla-oft", *(a.format(tmp=tmp_path) for a in args), "--out", str(run), cwd=tmp_path
    )
    lines = _error_lines(res)
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not run.exists() and not (tmp_path / "runs").exists()


def test_unknown_arch_fails_before_the_run_dir(tmp_path):
    res = _cli("port", "no-such-arch", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert res.returncode == 2 and len(_error_lines(res)) == 1 and not (tmp_path / "run").exists()


def test_failed_run_is_marked_refused_without_force_and_reported_on_resume(tmp_path):
    skills = tmp_path / "skills"
    shutil.copytree(REPO / "skills", skills)
    shutil.rmtree(skills / "proprio_projector")  # the planner cannot realise this module: the run fails there
    run = tmp_path / "run"
    res = _cli("port", "openvla-oft", "--skills-dir", str(skills), "--run-dir", str(run), cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    reason = (run / "FAILED").read_text().strip()
    assert reason.startswith(
        "proprio_projector: module proprio_projector (ProprioProjector) has no skill"
    ) or reason.startswith("module proprio_projector (ProprioProjector) has no skill")
    assert "\n" not in reason and "{" not in reason
    out = res.stderr
    assert "✗ planner" in out and "✓ planner" not in out and "✓ analyzer" in out
    assert f"port FAILED: {reason}" in out and "worst module: none compared" in out

    again = _cli("port", "openvla-oft", "--skills-dir", str(skills), "--out", str(run), cwd=tmp_path)
    lines = _error_lines(again)
    assert again.returncode == 2 and len(lines) == 1
    assert "holds a failed port" in lines[0] and "--force" in lines[0] and f"--resume {run}" in lines[0]

    resumed = _cli("port", "--resume", str(run), cwd=tmp_path)
    lines = _error_lines(resumed)
    assert resumed.returncode == 1 and len(lines) == 1 and reason in lines[0]

    forced = _cli(
        "port", "openvla-oft", "--skills-dir", str(skills), "--out", str(run), "--force", cwd=tmp_path
    )
    assert (
        forced.returncode == 1 and (run / "FAILED").read_text().strip() == reason
    )  # replaced, failed the same way


def test_force_refuses_a_directory_that_is_not_a_run(tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    res = _cli("port", "openvla-oft", "--out", str(other), "--force", cwd=tmp_path)
    assert res.returncode == 2 and "not a run directory" in res.stderr and (other / "notes.txt").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--method", "bogus"], "unknown quantizer 'bogus'"),
        (["--method", "q8_0", "--bpw", "3.0"], "--bpw applies to actquant only"),
    ],
)
def test_quantize_bad_method_is_one_line_exit_2_and_no_file(tmp_path, args, needle):
    out = tmp_path / "x.gguf"
    res = _cli("quantize", "openvla-oft-tiny", *args, "--out", str(out), cwd=tmp_path)
    lines = _error_lines(res)
    assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], res.stderr[-2000:]
    assert not out.exists()


def test_local_sandbox_without_build_tools_fails_before_the_run_dir(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH with no cmake and no compiler
    run = tmp_path / "run"
    res = _cli(
        "port", "openvla-oft", "--sandbox", "local", "--out", str(run), cwd=tmp_path, env={"PATH": str(empty)}
    )
    lines = _error_lines(res)
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "needs cmake and a C++ compiler" in lines[0] and not run.exists()


def test_a_port_failing_after_the_converter_leaves_no_valid_looking_gguf(tmp_path):
    skills = tmp_path / "skills"
    shutil.copytree(REPO / "skills", skills)
    with (skills / "proprio_projector" / "template.cpp.j2").open("a") as f:
        f.write("{{ no_such_variable }}\n")  # valid Jinja2, so the skill loads; the designer cannot render it
    run = tmp_path / "run"
    res = _cli("port", "openvla-oft", "--skills-dir", str(skills), "--out", str(run), cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    assert not (run / "model.gguf").exists() and (run / "model.gguf.failed").stat().st_size > 0
    reason = (run / "FAILED").read_text().strip()
    assert (
        reason.startswith("designer: skill proprio_projector: template does not render") and "{" not in reason
    ), reason
    assert reason.endswith("(model.gguf renamed model.gguf.failed)"), reason
    out = res.stderr
    assert "✓ converter" in out and "✗ designer" in out and "✓ designer" not in out and "Traceback" not in out
    errors = [ln for ln in _error_lines(res) if ln.startswith("error: ")]
    assert errors == [f"error: {reason}"], errors


@pytest.mark.parametrize(
    "key, value, needle",
    [
        (
            "num_hidden_layers",
            10_000_000,
            "text_config.num_hidden_layers = 10000000: expected an integer in [1, 1024]",
        ),
        ("num_attention_heads", 0, "text_config.num_attention_heads = 0: expected an integer in [1, 1024]"),
    ],
)
def test_bad_config_json_is_refused_before_the_run_dir(tmp_path, key, value, needle):
    import json

    from omnimodel.port import bundled_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundled_checkpoint("openvla-oft"), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"][key] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    run = tmp_path / "run"
    res = _cli("port", "openvla-oft", "--checkpoint", str(ckpt), "--out", str(run), cwd=tmp_path)
    lines = _error_lines(res)
    assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], res.stderr[-2000:]
    assert lines[0].startswith(f"error: {ckpt / 'config.json'}: ") and not run.exists()


def test_tensor_shapes_that_disagree_with_config_json_are_refused_before_the_run_dir(tmp_path):
    """A config.json whose sizes are valid but do not describe the weights: one line naming the tensor, exit 2."""
    import json

    from omnimodel.port import bundled_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundled_checkpoint("openvla-oft"), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] = 2 * int(cfg["text_config"]["intermediate_size"])
    (ckpt / "config.json").write_text(json.dumps(cfg))
    run = tmp_path / "run"
    res = _cli("port", "openvla-oft", "--checkpoint", str(ckpt), "--out", str(run), cwd=tmp_path)
    lines = _error_lines(res)
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "mlp" in lines[0] and "has shape" in lines[0] and "config.json implies" in lines[0], lines
    assert not run.exists()


def _escape_index(ckpt):
    import json

    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = "../outside.safetensors"
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))


def _more_layers(ckpt):
    import json

    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 3  # the weights hold 2
    (ckpt / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_escape_index, "shard path '../outside.safetensors' leaves the checkpoint directory"),
        (
            _more_layers,
            "text_config.num_hidden_layers = 3 but the checkpoint's tensor names hold 2 LLaMA layers",
        ),
    ],
)
def test_bad_checkpoint_files_are_refused_before_the_run_dir(tmp_path, edit, needle):
    from omnimodel.port import bundled_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundled_checkpoint("openvla-oft"), ckpt)
    edit(ckpt)
    run = tmp_path / "run"
    res = _cli("port", "openvla-oft", "--checkpoint", str(ckpt), "--out", str(run), cwd=tmp_path)
    lines = _error_lines(res)
    assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], res.stderr[-2000:]
    assert not run.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["port", "openvla-oft", "--bogus"], "error: No such option: --bogus"),
        (["zoo", "make"], "error: Missing argument 'preset'; see `"),
        (["port", "openvla-oft", "--max-iterations", "abc"], "error: Invalid value for '--max-iterations'"),
        (["nosuchcommand"], "error: No such command 'nosuchcommand'; see `"),
    ],
)
def test_usage_errors_are_one_line_exit_2(tmp_path, args, needle):
    res = _cli(*args, cwd=tmp_path)
    lines = _error_lines(res)
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith(needle), res.stderr[-2000:]


def test_help_and_no_arguments_still_print_the_help(tmp_path):
    res = _cli("--help", cwd=tmp_path)
    assert res.returncode == 0 and "Usage:" in res.stdout and "port" in res.stdout and res.stderr == ""
    res = _cli("zoo", cwd=tmp_path)
    assert (
        res.returncode == 2 and "Usage:" in res.stdout and "make" in res.stdout and "error" not in res.stderr
    )
