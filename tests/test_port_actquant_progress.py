"""`omnimodel port --quant actquant:...` shows the quantizer's stage lines on stderr, as `quantize` does."""

from __future__ import annotations

import logging

from typer.testing import CliRunner

from omnimodel import cli
from omnimodel import port as port_mod


def test_port_prints_actquant_stage_lines(monkeypatch):
    def fake_run_port(opts, resume=False, json_events=False, console=None):
        logging.getLogger("actquant_plugin.plugin").info("actquant: HSIC terms (1.0 s)")
        return {"status": "ok"}

    monkeypatch.setattr(port_mod, "resume_options", lambda run_dir: None)
    monkeypatch.setattr(port_mod, "run_port", fake_run_port)
    log = logging.getLogger("actquant_plugin")
    before = list(log.handlers)
    try:
        res = CliRunner().invoke(cli.app, ["port", "--resume", "somewhere"])
    finally:
        for h in log.handlers[len(before) :]:
            log.removeHandler(h)
        log.propagate = True
    assert res.exit_code == 0, res.output
    assert "  actquant: HSIC terms (1.0 s)" in res.stderr
