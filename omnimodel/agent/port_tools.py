"""The pipeline side of the agent's tools for one run: build in the sandbox, one module's parity, module source.

Every result starts with a stable first line (`BUILD OK`, `BUILD FAILED`, `PARITY PASS <module>`,
`PARITY FAIL <module>`, `PARITY ERROR <module>`); numbers that may differ between machines come
after it, so an authored transcript can pin the first line (replay `prefix` match).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CLI = "policy_cli"
MAX_ERROR_LINES = 60


def compiler_errors(text: str, limit: int = MAX_ERROR_LINES) -> str:
    """The error lines of a build log with the two lines after each (the caret and the code)."""
    lines = text.splitlines()
    keep: list[int] = []
    for i, line in enumerate(lines):
        if re.search(r"\berror\b|Error \d|undefined reference", line):
            keep += [i, i + 1, i + 2]
    picked = [lines[i] for i in sorted(set(keep)) if i < len(lines)]
    if not picked:
        picked = lines[-limit:]
    return "\n".join(picked[:limit])


def module_source(checkpoint: str, module: str) -> str:
    """The PyTorch source of a module's class and of its descendants' non-torch classes."""
    import torch

    from omnimodel import archs
    from omnimodel.models.custom import install_custom_modules

    arch = archs.for_checkpoint(Path(checkpoint))
    with torch.device("meta"):
        model = arch.build_model(arch.read_config(Path(checkpoint)))
        install_custom_modules(model, Path(checkpoint))
    sub = model.get_submodule(module)
    seen, parts = set(), []
    for mod in sub.modules():
        cls = type(mod)
        if cls in seen or cls.__module__.startswith("torch."):
            continue
        seen.add(cls)
        try:
            parts.append(inspect.getsource(cls))
        except (OSError, TypeError):
            parts.append(f"# source of {cls.__qualname__} not available")
    return "\n".join(parts).rstrip() + "\n"


def module_trace(analysis: dict, module: str) -> str:
    """The module and its descendants as traced: class, parameter shapes, ops, input/output shapes."""
    rows = []
    for rec in analysis["modules"]:
        name = rec["name"]
        if name != module and not name.startswith(module + "."):
            continue
        params = ", ".join(f"{k} {v}" for k, v in rec["params"].items())
        rows.append(
            f"{name} ({rec['cls']}): in {rec.get('input_shapes')} -> out {rec.get('output_shapes')}; "
            f"ops {', '.join(rec.get('ops') or []) or '-'}" + (f"; params {params}" if params else "")
        )
    return "\n".join(rows) if rows else f"no traced module {module!r}"


@dataclass
class PortTools:
    """Build, one-module parity and module source for one run (the callables ToolBox takes)."""

    run_dir: Path
    checkpoint: str
    sandbox: str = "auto"
    backend: str = "cpu"
    quant: str = "f32"
    last_check: str = ""  # the latest build / parity result: the diagnosis a budget stop reports
    checks: list[str] = field(default_factory=list)
    _box: object = None
    _ggml: object = None

    def _toolchain(self):
        if self._box is None:
            from omnimodel.sandbox import get_sandbox
            from omnimodel.toolchain import ensure_ggml_build

            self._box = get_sandbox(self.sandbox)
            self._ggml = ensure_ggml_build(self.backend, self._box)
        return self._box, self._ggml

    def _record(self, text: str) -> str:
        self.last_check = text
        self.checks.append(text.splitlines()[0] if text else "")
        return text

    def _cmake(self, run: list[str] | None, ro: dict | None = None):
        from omnimodel.sandbox.cmake_project import compile_and_run_cmake_project

        box, ggml = self._toolchain()
        return compile_and_run_cmake_project(
            Path(self.run_dir) / "cpp",
            Path(self.run_dir) / "build",
            box,
            ggml,
            run=run,
            configure_args=[f"-DGGML_DIR={ggml.prefix}"],
            ro_mounts=ro,
            run_timeout_s=600,
            memory_mb=8192,
        )

    @staticmethod
    def _build_failure(result) -> str | None:
        failed = result.failed_step()
        if failed and failed[0] in ("configure", "build"):
            res = failed[1]
            return f"BUILD FAILED ({failed[0]} step)\n{compiler_errors(res.stdout + chr(10) + res.stderr)}"
        return None

    def build(self) -> str:
        """Build cpp/ in the sandbox: `BUILD OK` or `BUILD FAILED` with the compiler's errors."""
        result = self._cmake(None)
        return self._record(self._build_failure(result) or "BUILD OK")

    def run_parity(self, module: str) -> str:
        """Build, run `policy_cli validate` on just this module's cached tensors, compare with PyTorch."""
        from omnimodel.analysis import read_reference
        from omnimodel.parity import COSINE_THRESHOLD, compare, weight_class

        run_dir = Path(self.run_dir)
        ref_file = run_dir / "reference" / f"{module}.gguf"
        if not ref_file.is_file():
            return self._record(
                f"PARITY ERROR {module}\nno cached tensors for {module!r} (reference/{module}.gguf)"
            )
        work = (run_dir / "build" / "agent_parity" / module).resolve()
        shutil.rmtree(work, ignore_errors=True)
        (work / "ref").mkdir(parents=True)
        (work / "out").mkdir()
        shutil.copyfile(ref_file, work / "ref" / ref_file.name)
        gguf_path = (run_dir / "model.gguf").resolve()
        result = self._cmake(
            [CLI, "validate", str(gguf_path), str(work / "ref"), str(work / "out")],
            {gguf_path: str(gguf_path)},
        )
        failure = self._build_failure(result)
        if failure:
            return self._record(failure)
        got_file = work / "out" / f"{module}.gguf"
        if not got_file.is_file():
            res = result.run
            lines = [ln for ln in (res.stdout if res else "").splitlines() if ln.startswith("{")]
            messages = [json.loads(ln).get("message", "") for ln in lines if '"error"' in ln]
            detail = "; ".join(m for m in messages if m) or (res.stderr[-1500:] if res else "no output")
            return self._record(f"PARITY ERROR {module}\nthe native run failed: {detail}")
        ref = read_reference(ref_file)["out"]
        got = read_reference(got_file)["out"]
        threshold = COSINE_THRESHOLD[weight_class(self.quant)]
        p = compare(got, ref)
        verdict = "PASS" if p.passed(threshold) else "FAIL"
        flat_got, flat_ref = got.reshape(-1)[:4], ref.reshape(-1)[:4]
        detail = (
            f"Details: cosine {p.cosine:.7f} (need >= {threshold}), max abs err {p.max_abs_err:.3g}, "
            f"shape {list(got.shape)} vs reference {list(ref.shape)}, finite {p.finite}; "
            f"first values got {[round(float(v), 5) for v in flat_got]} want {[round(float(v), 5) for v in flat_ref]}"
        )
        return self._record(f"PARITY {verdict} {module}\n{detail}")

    def show_module(self, module: str) -> str:
        """The module's PyTorch source and its traced ops with shapes."""
        analysis = json.loads((Path(self.run_dir) / "analysis.json").read_text())
        try:
            source = module_source(self.checkpoint, module)
        except (AttributeError, KeyError) as exc:
            return f"no module {module!r} in the model ({exc})"
        return f"PyTorch source:\n```python\n{source}```\nTraced (module: in -> out shapes; ops; params):\n{module_trace(analysis, module)}"
