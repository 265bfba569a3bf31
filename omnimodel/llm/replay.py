"""`replay:FILE`: answer only from a recorded transcript, in order, and fail loudly on any mismatch.

A transcript is JSON lines. The first line may be a header `{"header": {...}}` (for example
`{"authored": true, "note": "authored, not recorded from a live model"}`); it is skipped. Every
other line is `{"request": {...}, "response": {...}}` as written by `record:` (see record.py).

Each request is compared with the recorded one in a canonical form that keeps what determines
the answer and drops what is volatile:
  * `model` (the request's own, else the provider's: the header's `model`, else the first entry's),
  * `system`, every tool's `name` and `parameters` schema (in order; descriptions ignored),
  * per message: role, text, the name + arguments of each tool call, the text and error flag of
    each tool result. Tool-call ids, `max_tokens`, timestamps and usage are ignored.
Strings are normalised: CRLF -> LF, trailing spaces per line dropped, and the run directory's
absolute path (the entry's `run_dir`, and the replaying run's own) replaced by `<RUN_DIR>`.

A recorded entry may relax the comparison with a documented `"match"` field (a string or a list):
  * `"prefix"`: each recorded string (system, texts, tool results) needs only be a prefix of the
    actual one — an authored transcript can pin the head of a build log or parity report while
    its volatile tail (timings, last digits) may differ;
  * `"tail"`: the recorded messages are compared with the last messages of the request (earlier
    turns were checked by earlier calls), so an authored transcript need not repeat them.
Replay never imports an HTTP client and never opens a socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omnimodel.errors import LLMError
from omnimodel.llm.base import Message, Request, Response

RUN_DIR_TOKEN = "<RUN_DIR>"
MATCH_MODES = ("exact", "prefix", "tail")


def load_transcript(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header (or {}) and the list of recorded entries of a transcript file."""
    path = Path(path)
    if not path.is_file():
        raise LLMError(
            f"replay transcript {path} does not exist; pass --llm replay:PATH to an existing .jsonl"
        )
    header: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LLMError(
                f"replay transcript {path}:{lineno} is not valid JSON ({exc.msg}); fix or re-record it"
            ) from exc
        if not isinstance(record, dict):
            raise LLMError(f"replay transcript {path}:{lineno} is not a JSON object; fix or re-record it")
        if "header" in record and not entries and not header:
            header = dict(record["header"])
            continue
        if "request" not in record or "response" not in record:
            raise LLMError(
                f"replay transcript {path}:{lineno} lacks 'request' or 'response'; fix or re-record it"
            )
        modes = record.get("match", "exact")
        modes = [modes] if isinstance(modes, str) else list(modes)
        bad = [m for m in modes if m not in MATCH_MODES]
        if bad:
            raise LLMError(
                f"replay transcript {path}:{lineno} has unknown match mode {bad[0]!r}; use {MATCH_MODES}"
            )
        record["_line"] = lineno
        record["_modes"] = modes
        entries.append(record)
    return header, entries


def normalise_text(text: str, run_dirs: list[str]) -> str:
    """Text with line endings, trailing spaces and run-directory paths made comparable."""
    for run_dir in sorted({d for d in run_dirs if d}, key=len, reverse=True):
        text = text.replace(run_dir, RUN_DIR_TOKEN)
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def canonical_message(msg: Message, run_dirs: list[str]) -> dict[str, Any]:
    """The parts of one message that determine the next answer."""
    if msg.role == "tool":
        return {"role": "tool", "result": normalise_text(msg.content, run_dirs), "is_error": msg.is_error}
    out: dict[str, Any] = {"role": msg.role, "text": normalise_text(msg.content, run_dirs)}
    if msg.role == "assistant":
        out["tool_calls"] = [{"name": c.name, "arguments": c.arguments} for c in msg.tool_calls]
    return out


def canonical_request(request: Request, model: str, run_dirs: list[str]) -> dict[str, Any]:
    """The canonical, comparable form of a request (see the module docstring)."""
    return {
        "model": request.model or model,
        "system": normalise_text(request.system, run_dirs),
        "tools": [{"name": t.name, "parameters": t.parameters} for t in request.tools],
        "messages": [canonical_message(m, run_dirs) for m in request.messages],
    }


def first_difference(expected: Any, got: Any, path: str = "", prefix_ok: bool = False) -> str | None:
    """A one-line description of the first place where `got` differs from `expected`, or None."""
    where = path or "<root>"
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in expected:
            if key not in got:
                return f"{where}: missing key {key!r}"
            diff = first_difference(expected[key], got[key], f"{path}.{key}" if path else key, prefix_ok)
            if diff:
                return diff
        extra = [k for k in got if k not in expected]
        return f"{where}: unexpected key {extra[0]!r}" if extra else None
    if isinstance(expected, list) and isinstance(got, list):
        for i, (e, g) in enumerate(zip(expected, got, strict=False)):
            diff = first_difference(e, g, f"{path}[{i}]", prefix_ok)
            if diff:
                return diff
        if len(expected) != len(got):
            return f"{where}: expected {len(expected)} items, got {len(got)}"
        return None
    if isinstance(expected, str) and isinstance(got, str):
        if expected == got or (prefix_ok and got.startswith(expected)):
            return None
        return f"{where}: {_string_difference(expected, got)}"
    if expected != got or type(expected) is not type(got):
        return f"{where}: expected {_cut(json.dumps(expected))} got {_cut(json.dumps(got))}"
    return None


def _string_difference(expected: str, got: str, context: int = 30) -> str:
    """Both strings shown around the first differing character."""
    i = 0
    while i < min(len(expected), len(got)) and expected[i] == got[i]:
        i += 1
    start = max(0, i - context)
    lead = "..." if start else ""
    return (
        f"differs at char {i}: expected {lead}{_cut(repr(expected[start : i + context]))} "
        f"got {lead}{_cut(repr(got[start : i + context]))}"
    )


def _cut(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReplayProvider:
    """Answers from a transcript in order; a request that does not match the recording is an error."""

    name = "replay"

    def __init__(self, path: Path, run_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.header, self.entries = load_transcript(self.path)
        first_model = self.entries[0]["request"].get("model") if self.entries else None
        self.model = str(self.header.get("model") or first_model or "replay")
        self.run_dir = str(Path(run_dir).resolve()) if run_dir is not None else ""
        self.position = 0

    @property
    def remaining(self) -> int:
        """How many recorded calls are not yet answered."""
        return len(self.entries) - self.position

    def complete(self, request: Request) -> Response:
        """The next recorded response, after checking that `request` matches the recorded one."""
        call = self.position + 1
        if self.position >= len(self.entries):
            raise LLMError(
                f"replay {self.path}: call {call} was made but the transcript holds only "
                f"{len(self.entries)} calls; the run diverged from the recording (re-record it)"
            )
        entry = self.entries[self.position]
        recorded = Request.from_dict(entry["request"])
        run_dirs = [self.run_dir, str(entry.get("run_dir") or "")]
        want = canonical_request(recorded, self.model, run_dirs)
        have = canonical_request(request, self.model, run_dirs)
        modes = entry["_modes"]
        if "tail" in modes:
            n = len(want["messages"])
            if len(have["messages"]) < n:
                diff = f"messages: expected at least {n} items, got {len(have['messages'])}"
                raise self._mismatch(call, entry, diff)
            have["messages"] = have["messages"][len(have["messages"]) - n :]
        diff = first_difference(want, have, prefix_ok="prefix" in modes)
        if diff:
            raise self._mismatch(call, entry, diff)
        self.position += 1
        return Response.from_dict(entry["response"])

    def _mismatch(self, call: int, entry: dict[str, Any], diff: str) -> LLMError:
        return LLMError(
            f"replay {self.path}:{entry['_line']} (call {call}) request does not match the recording at "
            f"{diff}; the run diverged from the transcript (fix the run or re-record)"
        )
