"""QuantSpec, Plan and Validation: parse / round trip / schema errors; failed-run marking; the port's summary."""

from __future__ import annotations

import json

import pytest

from omnimodel.errors import ConfigError, PipelineError, QuantError
from omnimodel.plan import Plan
from omnimodel.quantspec import QuantSpec
from omnimodel.validation import Validation


@pytest.mark.parametrize(
    "text, canonical, method, budget, wclass, calib",
    [
        ("f32", "f32", "f32", None, "f32", False),
        ("F16", "f16", "f16", None, "f16", False),
        ("bf16", "bf16", "bf16", None, "bf16", False),
        ("q8_0", "q8_0", "q8_0", None, "quant", False),
        ("rtn:Q4_K", "rtn:q4_k", "rtn", None, "quant", False),
        ("q4_k_m", "q4_k_m", "q4_k_m", None, "quant", False),
        ("mix:Q3_K_M", "mix:q3_k_m", "mix", None, "quant", False),
        ("imatrix", "imatrix", "imatrix", None, "quant", True),
        ("imatrix:q2_k", "imatrix:q2_k", "imatrix", None, "quant", True),
        ("actquant:3", "actquant:3.0", "actquant", 3.0, "quant", True),
        (" actquant:2.5, Objective=magnitude ", "actquant:2.5,objective=magnitude", "actquant", 2.5, "quant", True),
        ("actquant:bpw=3.5,allocation=uniform", "actquant:3.5,allocation=uniform", "actquant", 3.5, "quant", True),
    ],
)
def test_quantspec_parses_to_canonical_text_and_round_trips(text, canonical, method, budget, wclass, calib):
    spec = QuantSpec.parse(text)
    assert str(spec) == canonical
    assert (spec.method, spec.budget, spec.weight_class, spec.needs_calibration) == (method, budget, wclass, calib)
    assert QuantSpec.parse(str(spec)) == spec


def test_quantspec_with_budget_keeps_options():
    spec = QuantSpec.parse("actquant:3.0,objective=magnitude").with_budget(2.0)
    assert str(spec) == "actquant:2.0,objective=magnitude" and spec.budget == 2.0
    with pytest.raises(ConfigError, match="--bpw applies to actquant only"):
        QuantSpec.parse("q8_0").with_budget(3.0)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("bogus", "unknown quantizer 'bogus': use one of f32, f16"),
        ("", "unknown quantizer ''"),
        ("rtn", "rtn needs a type"),
        ("rtn:q9_k", "unknown GGML type 'q9_k'"),
        ("actquant:three", "'three' is not a bits-per-weight number"),
        ("actquant:3.0,objective=zz", "objective='zz'"),
        ("actquant:3.0,nonsense=1", "unknown option 'nonsense'"),
        ("mix:q5_x", "unknown mix 'q5_x'"),
        ("f32:1", "takes no argument"),
    ],
)
def test_quantspec_errors_are_one_line_config_and_quant_errors(text, needle):
    with pytest.raises(ConfigError) as info:
        QuantSpec.parse(text)
    assert isinstance(info.value, QuantError)  # load_quantizer's callers catch QuantError
    message = str(info.value)
    assert needle in message and "\n" not in message


def _plan() -> Plan:
    return Plan(
        model="openvla-oft",
        arch="openvla-oft",
        skills_dir="/skills",
        units=[
            {"name": "vision", "cls": "Tower", "realised_by": "skill:dinov2_block", "skill": "dinov2_block"},
            {"name": "head", "cls": "Head", "realised_by": "llm", "skill": None, "slot": "mlp_resnet_action_head"},
        ],
        glue=[{"name": "<root>", "cls": "Policy", "skill": "fused_projector"}],
        needs_llm=[{"name": "head", "cls": "Head", "params": [], "ops": []}],
        unused=["vision.blocks.3"],
        param_transforms={"vision.w": {"gguf_suffix": "w", "transforms": ["transpose"]}},
        conversion_order=["vision", "llm"],
    )


def test_plan_round_trips_through_its_on_disk_form(tmp_path):
    plan = _plan()
    path = plan.write(tmp_path)
    data = json.loads(path.read_text())
    assert path.name == "plan.json" and data["arch"] == "openvla-oft" and data["units"][1]["realised_by"] == "llm"
    again = Plan.read(tmp_path)
    assert again == plan
    assert [u["name"] for u in again.llm_units()] == ["head"]
    assert again.skills_used() == ["dinov2_block", "fused_projector"]
    assert again.slot_of("head") == "mlp_resnet_action_head" and again.slot_of("vision") is None


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.pop("arch"), "key 'arch' is missing"),
        (lambda d: d.update(units={}), "key 'units' is dict, expected list"),
        (lambda d: d["units"][0].pop("realised_by"), "units[0]: key 'realised_by' is missing"),
        (lambda d: d.update(param_transforms=[]), "key 'param_transforms' is list, expected dict"),
    ],
)
def test_plan_schema_errors_name_the_file_and_key(tmp_path, mutate, needle):
    data = _plan().to_json()
    mutate(data)
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(PipelineError) as info:
        Plan.read(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "plan.json") in message and needle in message and "\n" not in message


def test_plan_read_names_a_missing_or_corrupt_file(tmp_path):
    with pytest.raises(PipelineError, match="no plan; run the planner first"):
        Plan.read(tmp_path)
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(PipelineError, match="not valid JSON"):
        Plan.read(tmp_path)


def _validation(**kw) -> Validation:
    modules = [
        {"name": "vision", "realised_by": "skill:x", "threshold": 0.999, "cosine": 0.9999, "max_abs_err": 1e-3, "passed": True},
        {"name": "llm", "realised_by": "skill:y", "threshold": 0.999, "cosine": 0.9990, "max_abs_err": 2e-3, "passed": True},
    ]
    return Validation(quant="q8_0", sandbox="local", reference="reference", modules=modules,
                      end_to_end={"passed": True, "action_max_abs_err": 1e-3, "action_cosine": 0.9999}, **kw)  # fmt: skip


def test_validation_round_trips_and_keeps_optional_errors_off_disk(tmp_path):
    v = _validation()
    data = json.loads(v.write(tmp_path).read_text())
    assert "build_error" not in data and "run_error" not in data
    assert list(data) == ["quant", "sandbox", "reference", "modules", "end_to_end"]
    again = Validation.read(tmp_path)
    assert again == v and again.passed
    assert again.worst_module()["name"] == "llm"
    broken = _validation(run_error="policy_cli validate failed (exit 1)")
    broken.write(tmp_path)
    again = Validation.read(tmp_path)
    assert again.run_error.startswith("policy_cli") and not again.passed


def test_validation_first_failing_follows_the_plan_order():
    v = _validation()
    v.modules[0]["passed"] = v.modules[1]["passed"] = False
    assert v.first_failing(["llm", "vision"])["name"] == "llm"
    assert v.first_failing(["vision", "llm"])["name"] == "vision"
    assert not v.passed


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.pop("modules"), "key 'modules' is missing"),
        (lambda d: d["modules"][1].update(passed="yes"), "modules[1]: key 'passed' is str, expected bool"),
        (lambda d: d.update(end_to_end=None), "key 'end_to_end' is NoneType, expected dict"),
    ],
)
def test_validation_schema_errors_name_the_file_and_key(tmp_path, mutate, needle):
    data = _validation().to_json()
    mutate(data)
    (tmp_path / "validation.json").write_text(json.dumps(data))
    with pytest.raises(PipelineError) as info:
        Validation.read(tmp_path)
    assert str(tmp_path / "validation.json") in str(info.value) and needle in str(info.value)


def test_mark_failed_renames_the_gguf_and_writes_the_reason(tmp_path):
    from omnimodel.port import FAILED, failed_reason, mark_failed

    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    line = mark_failed(tmp_path, "validator: policy_cli crashed\nTraceback ...")
    assert not (tmp_path / "model.gguf").exists() and (tmp_path / "model.gguf.failed").read_bytes() == b"GGUF"
    assert line == "validator: policy_cli crashed (model.gguf renamed model.gguf.failed)"
    assert (tmp_path / FAILED).read_text() == line + "\n" and failed_reason(tmp_path) == line


def test_failure_reason_is_one_sentence_never_a_dict():
    from omnimodel.graph.nodes.reporter import failure_reason

    detail = "\nbuild failed (exit 2, killed_by=None):\n[1/3] c++ -c model.cpp\nmodel.cpp:12: error: 'x' was not declared\n"
    state = {"failing_module": "llm", "diagnosis": {"kind": "build", "detail": detail}}
    assert failure_reason(state) == "llm: the C++ build failed: model.cpp:12: error: 'x' was not declared"
    state = {"failing_module": "projector", "diagnosis": {"kind": "tolerance", "detail": "projector: cosine 0.98 below 0.999"}}
    assert failure_reason(state) == "projector: cosine 0.98 below 0.999"
    state = {"failing_module": "head", "error": "the agent stopped on head: 1 of 1 calls\nmore", "diagnosis": None}
    assert failure_reason(state) == "the agent stopped on head: 1 of 1 calls"  # the module is named once


def test_summary_is_three_lines_with_worst_module_error_bpw_and_size():
    from omnimodel.port import summary_lines

    report = {
        "status": "ok",
        "modules": [{"name": "vision", "cosine": 0.99999}, {"name": "llm", "cosine": 0.9991}],
        "end_to_end": {"action_max_abs_err": 0.0012, "action_cosine": 0.99991},
        "gguf": {"bpw": 8.5, "bytes": 2_500_000},
    }
    lines = summary_lines(report, "runs/x")
    assert len(lines) == 3
    assert lines[0] == "port ok: runs/x/report.md"
    assert "llm cosine 0.9991000" in lines[1]
    assert "0.0012" in lines[2] and "8.500 bits/weight" in lines[2] and "2.50 MB" in lines[2]
    failed = summary_lines({"status": "failed", "reason": "planner: no skill", "modules": [], "gguf": {}}, "r")
    assert failed[0].startswith("port FAILED: planner: no skill") and "none compared" in failed[1]


@pytest.mark.parametrize("quant, nxt", [("f32", "designer"), ("f16", "designer"), ("q8_0", "simulator"), ("actquant:3.0", "simulator")])
def test_only_quantized_runs_get_the_simulator(quant, nxt):
    from omnimodel.graph.wiring import NODES, after_converter

    assert after_converter({"quant": quant}) == nxt
    assert NODES.index("converter") < NODES.index("simulator") < NODES.index("designer")


def test_calibration_frame_cap():
    from actquant_plugin.calibration import DEFAULT_FRAMES, frame_cap

    assert frame_cap(None) == DEFAULT_FRAMES == 256
    assert frame_cap(64) == 64 and frame_cap(0) is None and frame_cap(-1) is None
