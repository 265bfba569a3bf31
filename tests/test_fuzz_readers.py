"""Seeded fuzzing of the GGUF reader (what `inspect` runs) and the safetensors shard reader.

Every mutated input must end in success or a project error (OmniError); any other exception, or a
case running past its time limit, is a failure listed with its seed and mutation. Each test prints
and records the number of cases it tried.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from test_hardening_gguf import write_tiny_gguf

from omnimodel.errors import OmniError
from omnimodel.ggufio import reader
from omnimodel.models.safetensors_mmap import open_safetensors

CASES = int(os.environ.get("OMNIMODEL_FUZZ_CASES", "500"))
CASE_SECONDS = 5.0
REPO = Path(__file__).resolve().parent.parent
INTERESTING_U32 = (0, 1, 2, 3, 4, 31, 32, 33, 255, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
INTERESTING_U64 = (0, 1, 8, 1 << 31, 1 << 32, 1 << 40, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


class CaseTimeout(Exception):
    """A fuzz case ran past CASE_SECONDS."""


@contextmanager
def time_limit(seconds: float):
    """Raise CaseTimeout in the main thread if the block runs longer than `seconds`."""

    def on_alarm(signum, frame):
        raise CaseTimeout(f"ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cases(name: str, n: int, case: Callable[[random.Random, list], None], record_property) -> None:
    """Run `n` seeded cases; `case(rng, note)` mutates, appends what it did to `note`, runs the code under test.

    A project error or a normal return passes; anything else is collected and reported at the end.
    """
    failures, outcomes = [], {"ok": 0, "error": 0}
    repo_before = sorted(os.listdir(REPO))
    for i in range(n):
        rng = random.Random(f"{name}-{i}")
        note: list[str] = []
        try:
            with time_limit(CASE_SECONDS):
                case(rng, note)
            outcomes["ok"] += 1
        except OmniError as exc:
            assert "\n" not in str(exc), f"case {i}: multi-line error {exc!s:.300}"
            outcomes["error"] += 1
        except Exception as exc:  # the failure this test looks for
            failures.append(f"case {i} ({', '.join(note)}): {type(exc).__name__}: {str(exc)[:200]}")
    print(f"fuzz {name}: {n} cases, {outcomes['ok']} ok, {outcomes['error']} project errors, {len(failures)} other")
    record_property(f"fuzz_{name}_cases", n)
    assert sorted(os.listdir(REPO)) == repo_before, "a fuzz case wrote into the repository"
    assert not failures, f"{len(failures)} of {n} cases escaped as non-project errors:\n" + "\n".join(failures[:20])
    assert outcomes["error"] > 0, "no case was refused: the mutations do not reach the checks"


# ------------------------------------------------------------------------------------- byte mutations


def mutate_bytes(rng: random.Random, raw: bytes, hot: int, lo: int = 0) -> tuple[bytes, str]:
    """One random mutation of `raw`, aimed at its bytes [lo, hot) (a header) most of the time."""
    b = bytearray(raw)
    pos = rng.randrange(lo, min(hot, len(b))) if rng.random() < 0.85 else rng.randrange(len(b))
    op = rng.choice(("flip", "byte", "u32", "u64", "truncate", "insert", "delete", "multi"))
    if op == "flip":
        b[pos] ^= 1 << rng.randrange(8)
    elif op == "byte":
        b[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
    elif op == "u32":
        b[pos : pos + 4] = struct.pack("<I", rng.choice(INTERESTING_U32))
    elif op == "u64":
        b[pos : pos + 8] = struct.pack("<Q", rng.choice(INTERESTING_U64))
    elif op == "truncate":
        del b[pos:]
    elif op == "insert":
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    elif op == "delete":
        del b[pos : pos + rng.randint(1, 9)]
    else:
        for _ in range(rng.randint(2, 8)):
            b[rng.randrange(min(hot, len(b)))] = rng.randrange(256)
    return bytes(b), f"{op}@{pos}"


# ------------------------------------------------------------------------------------- GGUF (inspect)


def test_fuzz_gguf_reader(tmp_path, record_property):
    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    raw = src.read_bytes()
    hot = raw.index(b"output.weight") + 64  # header, metadata and tensor table
    target = tmp_path / "case.gguf"

    def case(rng, note):
        data, what = mutate_bytes(rng, raw, hot)
        note.append(what)
        target.write_bytes(data)
        summary = reader.summarize(target)  # what `omnimodel inspect` prints
        reader.format_summary(summary)
        json.dumps(summary.to_json(), default=str)
        for _type, _shape, payload in reader.read_tensor_bytes(target).values():
            assert payload.numel() <= len(data), "a tensor larger than the file"

    run_cases("gguf", CASES, case, record_property)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.gguf", "tiny.gguf"]


# ------------------------------------------------------------------------------------- safetensors


def _tiny_shard() -> tuple[dict, bytes]:
    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.ones(4, dtype=np.float16),
        "i": np.arange(3, dtype=np.int64),
    }
    header, data = {"__metadata__": {"format": "pt"}}, b""
    dtypes = {np.float32: "F32", np.float16: "F16", np.int64: "I64"}
    for key, arr in tensors.items():
        header[key] = {"dtype": dtypes[arr.dtype.type], "shape": list(arr.shape), "data_offsets": [len(data), len(data) + arr.nbytes]}
        data += arr.tobytes()
    return header, data


POISON = (0, -1, 1, 7, 16, 2**31, 2**63, 2**64 + 3, 1.5, float("nan"), "F32", "", None, True, [], [1], [0, 1, 2], [-1, 4], {}, {"a": 1})


def _mutate_header(rng: random.Random, header: dict) -> tuple[dict, str]:
    h = json.loads(json.dumps(header))
    key = rng.choice([k for k in h if k != "__metadata__"])
    op = rng.choice(("field", "field", "offset", "shape", "drop", "dtype", "entry", "extra", "meta"))
    if op == "field":
        h[key][rng.choice(("dtype", "shape", "data_offsets"))] = rng.choice(POISON)
    elif op == "offset":
        h[key]["data_offsets"][rng.randrange(2)] += rng.choice((-9, -1, 1, 2, 8, 1000))
    elif op == "shape":
        shape = h[key]["shape"]
        if shape:
            shape[rng.randrange(len(shape))] = rng.choice((0, -1, 1, 2, 5, 2**40))
        else:
            shape.append(2)
    elif op == "drop":
        h[key].pop(rng.choice(("dtype", "shape", "data_offsets")))
    elif op == "dtype":
        h[key]["dtype"] = rng.choice(("F32", "F16", "BF16", "I8", "U8", "F64", "I64", "BOOL", "F8_E4M3", "Q4"))
    elif op == "entry":
        h[key] = rng.choice(POISON)
    elif op == "extra":
        h[f"x{rng.randrange(9)}"] = {"dtype": "U8", "shape": [rng.randrange(4)], "data_offsets": [rng.randrange(60), rng.randrange(60)]}
    else:
        h["__metadata__"] = rng.choice(POISON)
    return h, f"{op}:{key}"


def test_fuzz_safetensors_header(tmp_path, record_property):
    header, data = _tiny_shard()
    target = tmp_path / "case.safetensors"

    def encode(h) -> bytes:
        body = json.dumps(h).encode()
        return struct.pack("<Q", len(body)) + body + data

    def case(rng, note):
        if rng.random() < 0.7:
            h, what = _mutate_header(rng, header)
            note.append(what)
            raw = encode(h)
        else:
            good = encode(header)
            raw, what = mutate_bytes(rng, good, 8 + len(json.dumps(header)))
        note.append(what)
        target.write_bytes(raw)
        tensors = open_safetensors(target)
        for key, t in tensors.items():
            assert t.numel() * t.element_size() <= len(raw), f"{key} larger than the file"

    run_cases("safetensors", CASES, case, record_property)
    assert [p.name for p in tmp_path.iterdir()] == ["case.safetensors"]


def test_time_limit_stops_a_hanging_case():
    with pytest.raises(CaseTimeout):
        with time_limit(0.2):
            while True:
                pass
