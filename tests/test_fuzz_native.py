"""Seeded fuzzing of the native loader: mutated GGUFs through `omni_load` of the generated library.

A micro OpenVLA-OFT (every structural feature, a few hundred thousand weights) is converted to a
GGUF that loads; each case mutates its header, metadata or tensor table and runs `omni_load` in a
driver process with a per-case alarm. A case must end in a loaded policy or NULL with a one-line
message: a crash (signal) or a hang is a failure, reported with its case number and mutation.
"""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gguf
import pytest
from test_codegen_native import ggml_prefix, native_build  # noqa: F401
from test_fuzz_readers import CASE_SECONDS, CASES, mutate_bytes

from omnimodel import runtime

BATCH = 100
DRIVER = r'''
import ctypes, signal, sys
lib = ctypes.CDLL(sys.argv[1])
lib.omni_load.restype = ctypes.c_void_p
lib.omni_load.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
lib.omni_free.argtypes = [ctypes.c_void_p]
lib.omni_last_error.restype = ctypes.c_char_p
limit = int(float(sys.argv[2])) or 1
for path in sys.argv[3:]:
    print("start", path, flush=True)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a hang in native code ends the process
    signal.alarm(limit)
    p = lib.omni_load(path.encode(), None)
    signal.alarm(0)
    if p:
        lib.omni_free(p)
        print("end ok", flush=True)
    else:
        msg = (lib.omni_last_error() or b"").decode("utf-8", "replace")
        print("end error", msg.replace("\n", "\\n"), flush=True)
'''


def micro_gguf(root: Path) -> Path:
    """A converted F32 GGUF of a micro OpenVLA-OFT (width 64, two blocks per tower, two LLaMA layers)."""
    from omnimodel.archs.openvla_oft.checkpoint import write_checkpoint
    from omnimodel.archs.openvla_oft.metadata import runtime_metadata
    from omnimodel.archs.openvla_oft.model import OpenVLAOFT, init_weights, preset
    from omnimodel.ggufio import convert
    from omnimodel.models.tokenizer import build_char_tokenizer, save_tokenizer_files
    from omnimodel.models.zoo import random_stats

    cfg = replace(preset("openvla-oft-tiny"), hidden=64, heads=2, kv_heads=2, mlp=128, name="micro")
    cfg.dino = replace(cfg.dino, width=64, depth=2, heads=2, mlp=128)
    cfg.siglip = replace(cfg.siglip, width=64, depth=2, heads=2, mlp=128)
    model = OpenVLAOFT(cfg)
    init_weights(model, seed=0)
    ckpt = root / "ckpt"
    ckpt.mkdir()
    tok = build_char_tokenizer(cfg.text_vocab)
    write_checkpoint(model, ckpt, random_stats(0), lambda d: save_tokenizer_files(tok, d, cfg.pad_token_id))
    src = convert.load_source(ckpt)
    out = root / "micro.gguf"
    convert.convert(src, out, "f32", metadata=runtime_metadata(src.config, src.stats))
    return out


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    return micro_gguf(tmp_path_factory.mktemp("micro"))


def _run_driver(lib: Path, driver: Path, files: list[Path]) -> tuple[list[tuple[str, str]], int, str]:
    """(path, outcome line) per finished case, the driver's return code, the path it was on when it ended."""
    proc = subprocess.run(
        [sys.executable, str(driver), str(lib), str(CASE_SECONDS), *map(str, files)],
        capture_output=True, text=True, errors="replace", timeout=CASE_SECONDS * len(files) + 60,
    )
    done, current = [], ""
    for line in proc.stdout.splitlines():
        if line.startswith("start "):
            current = line[6:]
        elif line.startswith("end ") and current:
            done.append((current, line[4:]))
            current = ""
    return done, proc.returncode, current


def test_fuzz_native_omni_load(native_build, micro, tmp_path, record_property):  # noqa: F811
    lib = native_build / runtime.LIBRARY
    base = micro
    raw = base.read_bytes()
    reader = gguf.GGUFReader(str(base))
    table_start = min(int(t.field.offset) for t in reader.tensors)  # the tensor infos, after the metadata
    data_start = int(reader.data_offset)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)

    done, rc, _ = _run_driver(lib, driver, [base])
    assert rc == 0 and done == [(str(base), "ok")], f"the unmutated micro GGUF must load: {done} rc={rc}"

    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    notes, outcomes, failures = {}, {"ok": 0, "error": 0}, []
    for start in range(0, CASES, BATCH):
        files = []
        for i in range(start, min(start + BATCH, CASES)):
            rng = random.Random(f"native-{i}")
            lo = table_start if rng.random() < 0.5 else 0  # half aimed at the tensor table
            data, what = mutate_bytes(rng, raw, data_start, lo)
            path = cases_dir / f"{i}.gguf"
            path.write_bytes(data)
            files.append(path)
            notes[str(path)] = f"case {i} ({what})"
        while files:
            done, rc, current = _run_driver(lib, driver, files)
            for path, outcome in done:
                kind = outcome.split(" ", 1)[0]
                outcomes[kind] += 1
                if kind == "error" and (len(outcome) < 8 or "\\n" in outcome):
                    failures.append(f"{notes[path]}: NULL without a one-line message: {outcome[:200]!r}")
            finished = {p for p, _ in done}
            if rc != 0:
                failures.append(f"{notes.get(current, current)}: driver ended with {rc} (signal {-rc} if negative)")
                finished.add(current)
            files = [f for f in files if str(f) not in finished] if rc != 0 else []
        for p in cases_dir.iterdir():
            p.unlink()
    print(f"fuzz native omni_load: {CASES} cases, {outcomes['ok']} ok, {outcomes['error']} errors, {len(failures)} crashes/hangs")
    record_property("fuzz_native_cases", CASES)
    assert not failures, f"{len(failures)} of {CASES} cases crashed or hung the native loader:\n" + "\n".join(failures[:20])
    assert outcomes["error"] > 0, "no case was refused: the mutations do not reach the loader's checks"


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_native_loader_refuses_truncated_files(native_build, micro, tmp_path, cut):  # noqa: F811
    raw = micro.read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(raw[: int(len(raw) * cut)])
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    done, rc, _ = _run_driver(native_build / runtime.LIBRARY, driver, [bad])
    assert rc == 0 and len(done) == 1 and done[0][1].startswith("error "), (done, rc)
    assert "truncat" in done[0][1] or "not a readable GGUF" in done[0][1], done
