"""`omnimodel export`: the exported folder builds and runs its C example in the sandbox; bad runs refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_codegen_native import ggml_prefix  # noqa: F401

from omnimodel import runtime
from omnimodel.errors import OmniError
from omnimodel.export import elf_needed_and_runpath, export_run

REPO = Path(__file__).resolve().parents[1]


def _omnimodel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omnimodel.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def ported(tmp_path_factory, ggml_prefix) -> Path:  # noqa: F811
    """A real `omnimodel port` of the tiny OFT preset (built and validated)."""
    root = tmp_path_factory.mktemp("export_port")
    assert _omnimodel("zoo", "make", "openvla-oft-tiny", str(root / "ck")).returncode == 0
    res = _omnimodel("port", "openvla-oft", "--checkpoint", str(root / "ck"), "--out", str(root / "run"))
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "run"


def test_export_builds_and_runs_its_c_example(ported, tmp_path):
    from omnimodel.sandbox import get_sandbox

    out = tmp_path / "export"
    res = _omnimodel("export", str(ported), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert not list(out.rglob("*.py")), "Python in the export"
    for elf in (out / "lib" / "libomnimodel_policy.so", out / "bin" / "policy_cli"):
        needed, runpath = elf_needed_and_runpath(elf)
        assert all("$ORIGIN" in p for p in runpath), (
            f"{elf.name}: RUNPATH {runpath} points outside the export"
        )
        for name in needed:
            assert not name.startswith("libggml") or (out / "lib" / name).exists(), f"{name} not exported"
    box = get_sandbox("auto")
    run = box.run(
        ["sh", "-c", "cd example && make -s && ./step ../model.gguf"], out, timeout_s=600, memory_mb=4096
    )
    assert run.exit_code == 0, run.stderr[-2000:]
    printed = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])
    got = np.asarray(printed["actions"], np.float32)
    # the same synthetic inputs in Python, through the run's own library
    with runtime.load(ported) as policy:
        n, s = policy.n_images, policy.image_size
        i = np.arange(n * s * s * 3)
        images = ((i * 7 + i // 3) % 256).astype(np.uint8).reshape(n, s, s, 3)
        state = (0.1 * np.arange(policy.proprio_dim, dtype=np.float32) - 0.3).astype(np.float32)
        want = policy.predict_action(list(images), state, printed["instruction"])
    assert got.shape == (8, 7)
    err = float(np.abs(got - want).max())
    assert err <= 1e-5, f"exported C example vs Python runtime max abs err {err:.3g}"


def test_export_refuses_unbuilt_and_failed_runs(ported, tmp_path):
    unbuilt = tmp_path / "unbuilt"
    shutil.copytree(ported, unbuilt, ignore=shutil.ignore_patterns("build", "reference", "model.gguf"))
    res = _omnimodel("export", str(unbuilt), "--out", str(tmp_path / "o1"))
    assert res.returncode == 2 and "not built" in res.stderr and len(res.stderr.strip().splitlines()) == 1, (
        res.stderr
    )
    failed = tmp_path / "failed"
    shutil.copytree(ported, failed, ignore=shutil.ignore_patterns("reference"))
    report = json.loads((failed / "report.json").read_text())
    (failed / "report.json").write_text(json.dumps(dict(report, status="failed")))
    with pytest.raises(OmniError, match="validation failed"):
        export_run(failed, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()
