"""benchmarks/actquant_pool.py: pooling closed-loop tables of several episode seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.actquant_pool import load, markdown, pool  # noqa: E402


def _table(path: Path, seed: int | None, rows: dict[str, tuple[float, float]]) -> Path:
    out = {"episodes_per_task": 5, "rows": [
        {"name": n, "table": "table1", "bpw": 3.0, "success_per_suite": {"a": a, "b": b}, "success_mean": (a + b) / 2}
        for n, (a, b) in rows.items()]}  # fmt: skip
    if seed is not None:
        out["seed"] = seed
    path.write_text(json.dumps(out))
    return path


def test_pool_weights_seeds_and_pairs_fp16(tmp_path):
    t0 = _table(tmp_path / "s0.json", None, {"fp16": (0.9, 0.9), "actquant 3.0": (0.8, 0.9), "rtn iq3_xxs @3.0": (0.5, 0.5)})
    t1 = _table(tmp_path / "s1.json", 1, {"fp16": (1.0, 0.8), "actquant 3.0": (0.7, 0.9)})
    rows = {r["name"]: r for r in pool(load([t0, t1]))}
    aq = rows["actquant 3.0"]
    assert aq["seeds"] == [0, 1] and aq["episodes"] == 2 * 5 * 10 * 2
    assert aq["success_per_suite"] == pytest.approx({"a": 0.75, "b": 0.9})
    assert aq["success_mean"] == pytest.approx(0.825)
    assert aq["of_fp16_same_seeds"] == pytest.approx(0.825 / 0.9)
    # a row with one seed is compared with fp16 on that seed only
    assert rows["rtn iq3_xxs @3.0"]["of_fp16_same_seeds"] == pytest.approx(0.5 / 0.9)
    assert rows["fp16"]["of_fp16_same_seeds"] is None
    assert list(rows) == ["fp16", "rtn iq3_xxs @3.0", "actquant 3.0"]  # the table's order
    md = markdown(list(rows.values()), [0, 1])
    assert "| actquant 3.0 | 3.000 | 85.0 | 80.0 | 75.0 | 90.0 | 82.5 |" in md


def test_pool_rejects_a_seed_twice_and_bad_files(tmp_path):
    from omnimodel.errors import OmniError

    t0 = _table(tmp_path / "a.json", 0, {"fp16": (1.0, 1.0)})
    t1 = _table(tmp_path / "b.json", 0, {"fp16": (1.0, 1.0)})
    with pytest.raises(OmniError, match="seed 0 is given twice"):
        load([t0, t1])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OmniError, match="not a readable table.json"):
        load([bad])
