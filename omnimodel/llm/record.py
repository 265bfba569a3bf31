"""`record:PROVIDER:MODEL`: forward to a live provider and append every call to transcript.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omnimodel.llm.base import Provider, Request, Response

TRANSCRIPT_NAME = "transcript.jsonl"


def transcript_entry(
    provider: str,
    model: str,
    request: Request,
    response: Response,
    run_dir: Path | None,
) -> dict[str, Any]:
    """One transcript line: which model answered, the request as sent and the response."""
    req = request.to_dict()
    req["model"] = request.model or model
    entry: dict[str, Any] = {"provider": provider, "request": req, "response": response.to_dict()}
    if run_dir is not None:
        entry["run_dir"] = str(Path(run_dir).resolve())
    return entry


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write and fsync, so a crash never leaves half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class RecordingProvider:
    """Forwards each request to `inner` and appends request + response to `<run_dir>/transcript.jsonl`."""

    def __init__(self, inner: Provider, run_dir: Path, header: dict[str, Any] | None = None) -> None:
        self.inner = inner
        self.name = f"record:{inner.name}"
        self.model = inner.model
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / TRANSCRIPT_NAME
        if not self.path.exists() or self.path.stat().st_size == 0:
            info = {"recorded": True, "provider": inner.name, "model": inner.model}
            append_line(self.path, {"header": {**info, **(header or {})}})

    def complete(self, request: Request) -> Response:
        """Answer through the live provider and record the exchange."""
        response = self.inner.complete(request)
        append_line(self.path, transcript_entry(self.inner.name, self.model, request, response, self.run_dir))
        return response
