"""Transient progress lines on a terminal: the validator (build, then modules k/N) and the converter (tensors k/N)."""

from __future__ import annotations

import io
import time

from rich.console import Console

from omnimodel.ggufio.convert import tensor_progress
from omnimodel.graph.nodes.validator import CLI, native_progress


def _wait_for(buf: io.StringIO, text: str, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if text in buf.getvalue():
            return True
        time.sleep(0.05)
    return False


def test_build_then_modules_k_of_n_on_a_terminal(tmp_path):
    build, out = tmp_path / "build", tmp_path / "build" / "validate_out"
    out.mkdir(parents=True)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with native_progress(build, out, ["vision", "llm", "action_head"], console=console):
        assert _wait_for(buf, "validator: building cpp/")
        (build / CLI).write_text("")  # the build is done
        assert _wait_for(buf, "0/3")
        (out / "vision.gguf").write_text("")
        (out / "llm.gguf").write_text("")
        assert _wait_for(buf, "validator: modules") and _wait_for(buf, "2/3")


def test_nothing_off_a_terminal(tmp_path):
    buf = io.StringIO()
    with native_progress(tmp_path, tmp_path, ["m"], console=Console(file=buf, force_terminal=False)):
        (tmp_path / "m.gguf").write_text("")
        time.sleep(0.4)
    assert buf.getvalue() == ""


def test_converter_counts_tensors_on_a_terminal_only():
    buf = io.StringIO()
    with tensor_progress(Console(file=buf, force_terminal=True, width=120)) as progress:
        task = progress.add_task("converter: tensors", total=3)
        progress.advance(task, 2)
        progress.refresh()
        assert "converter: tensors" in buf.getvalue() and "2/3" in buf.getvalue()
    quiet = io.StringIO()
    with tensor_progress(Console(file=quiet, force_terminal=False)) as progress:
        progress.advance(progress.add_task("converter: tensors", total=3))
    assert quiet.getvalue() == ""
