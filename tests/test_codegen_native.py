"""The generated C++ project at the tiny preset: render, build, per-module and end-to-end parity with PyTorch."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from omnimodel.archs.openvla_oft import GRAPH_SKILLS as OPENVLA_OFT_SKILLS
from omnimodel.codegen.build import build_project, find_ggml_prefix
from omnimodel.codegen.render import choose_skills, render_project
from omnimodel.errors import ConfigError
from omnimodel.paths import skills_dir

COS_F32 = 0.99999
E2E_MAX_ABS_F32 = 1e-4


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))


def read_gguf(path: Path) -> dict[str, np.ndarray]:
    from omnimodel.analysis import read_reference

    return read_reference(path)


@pytest.fixture(scope="session")
def ggml_prefix() -> Path:
    """The GGML build the session's native tests link: the cached one, else built now (what CI does on a fresh machine)."""
    prefix = find_ggml_prefix()
    if prefix is None and shutil.which("cmake") is not None:
        from omnimodel.sandbox import get_sandbox
        from omnimodel.toolchain import ensure_ggml_build

        try:
            prefix = ensure_ggml_build("cpu", get_sandbox("auto")).prefix
        except Exception as exc:  # noqa: BLE001 - no sandbox or compiler: the require below says what is missing
            require(False, f"a GGML build ({exc})")
    require(
        prefix is not None and shutil.which("cmake") is not None,
        "a GGML build (toolchain cache or $OMNIMODEL_GGML_DIR) and cmake",
    )
    return prefix


@pytest.fixture(scope="session")
def native_build(tmp_path_factory, ggml_prefix) -> Path:
    """The rendered and built project (one build for every test of the session)."""
    root = tmp_path_factory.mktemp("native")
    cpp = render_project(root, choose_skills(OPENVLA_OFT_SKILLS), "openvla-oft")
    return build_project(cpp, root / "build", ggml_prefix)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, native_build) -> Path:
    """A run directory for the tiny preset: checkpoint, reference cache, F32 GGUF, build/."""
    from omnimodel.analysis import analyze
    from omnimodel.archs.openvla_oft.metadata import runtime_metadata
    from omnimodel.archs.openvla_oft.policy import load_policy
    from omnimodel.ggufio import convert
    from omnimodel.models.zoo import make_checkpoint

    run = tmp_path_factory.mktemp("tiny_run")
    ckpt = make_checkpoint("openvla-oft-tiny", run / "ckpt", seed=0)
    policy = load_policy(ckpt)
    analyze(policy, run)
    src = convert.load_source(ckpt)
    convert.convert(src, run / "model.gguf", "f32", metadata=runtime_metadata(src.config, src.stats))
    (run / "port.json").write_text(json.dumps({"checkpoint": str(ckpt)}))
    shutil.copytree(native_build, run / "build")
    return run


def cli(build: Path, *args: str) -> list[dict]:
    """Run the generated policy_cli inside the sandbox (generated code never runs on the host)."""
    from omnimodel.sandbox import get_sandbox
    from omnimodel.toolchain import ensure_ggml_build

    box = get_sandbox("auto")
    ggml = ensure_ggml_build("cpu", box)
    mounts, outputs, argv = {ggml.prefix: str(ggml.prefix)}, {}, []
    for i, a in enumerate(args):
        p = Path(a)
        is_output = (args[0] == "validate" and i == 3) or (i > 0 and args[i - 1] == "--out")
        if p.is_absolute() and p.exists() and not is_output and not p.is_relative_to(build):
            mounts[p] = str(p)
        elif is_output:  # written inside the work dir (the only writable place), copied back
            inside = build / f"_out{len(outputs)}"
            shutil.rmtree(inside, ignore_errors=True)
            if args[0] == "validate":
                inside.mkdir()
                os.chmod(inside, 0o777)
            outputs[inside] = p
            a = str(inside)
        argv.append(a)
    res = box.run(
        [str(build / "policy_cli"), *argv],
        build,
        timeout_s=300,
        memory_mb=4096,
        ro_mounts=mounts,
        env={"LD_LIBRARY_PATH": f"{build}:{ggml.lib_dir}"},
    )
    for inside, wanted in outputs.items():
        if inside.is_dir():
            shutil.copytree(inside, wanted, dirs_exist_ok=True)
        elif inside.exists():
            shutil.copyfile(inside, wanted)
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert res.exit_code == 0, f"policy_cli {args[0]} failed: {res.stderr[-2000:]} {lines[-1:]}"
    return lines


def test_render_emits_every_skill_function(tmp_path):
    cpp = render_project(tmp_path, choose_skills(OPENVLA_OFT_SKILLS), "openvla-oft")
    src = (cpp / "omnimodel_policy.cpp").read_text()
    for name in OPENVLA_OFT_SKILLS:
        assert f"skill {name} v" in src, f"skill {name} not emitted"
    for fn in (
        "build_dinov2_block",
        "build_llama_decoder_layer",
        "build_oft_action_rows",
        "build_mlp_resnet_action_head",
    ):
        assert f"static ggml_tensor * {fn}(" in src
    assert (cpp / "CMakeLists.txt").read_text().count("GGML_DIR") >= 2
    assert (cpp / "omnimodel_policy.h").exists() and (cpp / "policy_cli.cpp").exists()


def test_render_without_a_needed_skill_fails(tmp_path):
    skills = tmp_path / "skills"
    shutil.copytree(skills_dir(), skills)
    shutil.rmtree(skills / "siglip_block")
    with pytest.raises(ConfigError, match="siglip_block"):
        choose_skills(OPENVLA_OFT_SKILLS, skills_root=skills)


@pytest.mark.parametrize("skill", sorted(OPENVLA_OFT_SKILLS))
def test_skill_test_vector_matches_pytorch(skill, native_build, tmp_path):
    vector = skills_dir() / skill / "test_vector.gguf"
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(vector, ref / "v.gguf")
    lines = cli(native_build, "validate", str(vector), str(ref), str(tmp_path / "out"), "--threads", "2")
    assert lines[-1]["ran"] == 1 and lines[-1]["failed"] == 0, lines
    module = lines[0]["module"]
    got = read_gguf(tmp_path / "out" / f"{module}.gguf")["out"]
    want = read_gguf(vector)["out"]
    c, err = cosine(got, want), float(np.abs(got.reshape(-1) - want.reshape(-1)).max())
    assert got.size == want.size, f"{skill}: {got.shape} vs {want.shape}"
    assert c >= COS_F32, f"{skill} ({module}): cosine {c:.7f} < {COS_F32} (max abs err {err:.3g})"


def _module_metrics(run: Path, out: Path) -> dict[str, tuple[float, float]]:
    metrics = {}
    for path in sorted(out.glob("*.gguf")):
        got = read_gguf(path)["out"]
        ref = read_gguf(run / "reference" / path.name)
        want = ref["out"] if "out" in ref else ref["actions_norm"]  # end_to_end: normalised actions
        assert got.size == want.size, f"{path.stem}: {got.shape} vs {want.shape}"
        metrics[path.stem] = (cosine(got, want), float(np.abs(got.reshape(-1) - want.reshape(-1)).max()))
    return metrics


def test_tiny_modules_match_pytorch_f32(tiny_run, tmp_path):
    lines = cli(
        tiny_run / "build",
        "validate",
        str(tiny_run / "model.gguf"),
        str(tiny_run / "reference"),
        str(tmp_path),
        "--threads",
        "2",
    )
    summary = lines[-1]
    assert summary["failed"] == 0
    metrics = _module_metrics(tiny_run, tmp_path)
    expected = {
        "projector",
        "proprio_projector",
        "action_head",
        "language_model.model.norm",
        "language_model.model.layers.0",
        "vision_backbone.featurizer.blocks.0",
        "vision_backbone.fused_featurizer.blocks.1",
        "vision_backbone.featurizer.patch_embed",
        "end_to_end",
    }
    assert expected <= set(metrics), f"modules not run: {sorted(expected - set(metrics))}"
    bad = {m: v for m, v in metrics.items() if v[0] < COS_F32}
    assert not bad, f"modules below cosine {COS_F32}: {bad}"


@pytest.mark.parametrize("flash_attn", ["0", "1"])
def test_tiny_end_to_end_actions_f32(tiny_run, flash_attn):
    ref = read_gguf(tiny_run / "reference" / "end_to_end.gguf")
    lines = cli(
        tiny_run / "build",
        "run",
        str(tiny_run / "model.gguf"),
        "--inputs",
        str(tiny_run / "reference" / "end_to_end.gguf"),
        "--threads",
        "2",
        "--flash-attn",
        flash_attn,
    )
    got = np.asarray(lines[-1]["actions"], np.float32)
    want = ref["actions"].reshape(got.shape)
    err = float(np.abs(got - want).max())
    # flash attention keeps K/V in F16 (as every GGML backend's kernel wants): a looser bound
    bound = E2E_MAX_ABS_F32 if flash_attn == "0" else 1e-2
    assert err <= bound, f"end-to-end action max abs error {err:.3g} > {bound} (flash_attn={flash_attn})"
    assert cosine(got, want) >= 0.9999


def test_tiny_forward_pass_alone_matches_normalized_actions(tiny_run):
    ref = read_gguf(tiny_run / "reference" / "end_to_end.gguf")
    lines = cli(
        tiny_run / "build",
        "run",
        str(tiny_run / "model.gguf"),
        "--inputs",
        str(tiny_run / "reference" / "end_to_end.gguf"),
        "--raw",
        "--threads",
        "2",
    )
    assert lines[-1]["normalized"] is True
    got = np.asarray(lines[-1]["actions"], np.float32)
    err = float(np.abs(got - ref["actions_norm"].reshape(got.shape)).max())
    assert err <= E2E_MAX_ABS_F32, f"normalised action max abs error {err:.3g}"


def test_bench_reports_a_median(tiny_run):
    lines = cli(
        tiny_run / "build",
        "bench",
        str(tiny_run / "model.gguf"),
        "-n",
        "3",
        "--warmup",
        "0",
        "--threads",
        "2",
    )
    assert lines[-1]["n"] == 3 and 0 < lines[-1]["min_ms"] <= lines[-1]["median_ms"] <= lines[-1]["max_ms"]


def test_validate_lists_unknown_modules_as_skipped(tiny_run, tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(tiny_run / "reference" / "projector.gguf", ref / "projector.gguf")
    fc1 = sorted((tiny_run / "reference").glob("projector.fc1*.gguf"))
    require(bool(fc1), "the analyzer caches leaf modules (projector.fc1)")
    shutil.copy(fc1[0], ref / fc1[0].name)
    summary = cli(
        tiny_run / "build", "validate", str(tiny_run / "model.gguf"), str(ref), str(tmp_path / "out")
    )[-1]
    assert summary["ran"] == 1 and summary["skipped"] == ["projector.fc1"]
