"""Pool closed-loop tables of several episode seeds (each a table.json of benchmarks/actquant_table.py).

    PYTHONPATH=. python benchmarks/actquant_pool.py benchmarks/results/actquant_table_native.json \
        benchmarks/results/actquant_table_native_seed1.json benchmarks/results/actquant_table_native_seed2.json \
        --out benchmarks/results/actquant_table_native_pooled

Every seed runs other episodes of the same tasks, and every row of one seed runs the same episodes,
so a row is compared with fp16 over the seeds both have (paired). Writes OUT.json and OUT.md: per
row its mean per seed, the pooled mean per suite and overall, the episode count, one standard error
of the pooled mean, and the pooled mean as a percentage of fp16's on the same seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.actquant_table import ABLATION_BPW, BUDGETS, in_plan_order, table1_rows, table4_rows  # noqa: E402


def load(paths: list[Path]) -> dict[int, dict]:
    """seed -> table.json; the seed comes from the file (`seed`, default 0), each at most once."""
    from omnimodel.errors import OmniError

    out: dict[int, dict] = {}
    for p in paths:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise OmniError(f"{p}: not a readable table.json ({e}); pass the WORK/table.json of actquant_table.py") from None
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "episodes_per_task" not in data:
            raise OmniError(f"{p}: no rows / episodes_per_task; pass the WORK/table.json of actquant_table.py")
        seed = int(data.get("seed", 0))
        if seed in out:
            raise OmniError(f"{p}: seed {seed} is given twice; pass one table per seed")
        out[seed] = data
    return out


def pool(tables: dict[int, dict]) -> list[dict]:
    """One pooled row per row name, in the table's order (rows it does not plan last, as first seen)."""
    by: dict[str, dict[int, dict]] = {}
    for seed, t in sorted(tables.items()):
        for r in t["rows"]:
            by.setdefault(r["name"], {})[seed] = r | {"episodes_per_task": int(t["episodes_per_task"])}
    plan = [r[0] for r in table1_rows(BUDGETS, None) + table4_rows(ABLATION_BPW)]
    fp16 = by.get("fp16", {})
    rows = []
    for name in (r["name"] for r in in_plan_order([{"name": n} for n in by], plan)):
        seeds = by[name]
        suites = sorted({s for r in seeds.values() for s in r["success_per_suite"]})
        weights = {k: r["episodes_per_task"] for k, r in seeds.items()}
        total = sum(weights.values())
        per_suite = {s: sum(weights[k] * r["success_per_suite"].get(s, 0.0) for k, r in seeds.items()) / total for s in suites}
        mean = sum(per_suite.values()) / max(len(per_suite), 1)
        episodes = sum(w * 10 * len(suites) for w in weights.values())  # 10 tasks per suite
        se = math.sqrt(max(mean * (1 - mean), 0.0) / max(episodes, 1))
        both = [k for k in seeds if k in fp16]
        rel = None
        if both and name != "fp16":
            mine = sum(weights[k] * seeds[k]["success_mean"] for k in both) / sum(weights[k] for k in both)
            ref = sum(weights[k] * fp16[k]["success_mean"] for k in both) / sum(weights[k] for k in both)
            rel = mine / ref if ref else None
        one = next(iter(seeds.values()))
        rows.append({"name": name, "table": one.get("table", "table1"), "bpw": one["bpw"], "seeds": sorted(seeds),
                     "per_seed": {k: r["success_mean"] for k, r in sorted(seeds.items())}, "success_per_suite": per_suite,
                     "success_mean": mean, "episodes": episodes, "standard_error": se,
                     "of_fp16_same_seeds": rel, "fp16_seeds": sorted(both)})  # fmt: skip
    return rows


def markdown(rows: list[dict], seeds: list[int]) -> str:
    """Pooled rows as a Markdown table."""
    suites = sorted({s for r in rows for s in r["success_per_suite"]})
    head = ("| method | bpw | " + " | ".join(f"seed {k}" for k in seeds) + " | " + " | ".join(suites)
            + " | pooled mean | ± SE | of fp16 (same seeds) |\n")  # fmt: skip
    head += "|---|---|" + "---|" * (len(seeds) + len(suites) + 3) + "\n"
    body = ""
    for r in rows:
        per = " | ".join(f"{100 * r['per_seed'][k]:.1f}" if k in r["per_seed"] else "" for k in seeds)
        cells = " | ".join(f"{100 * r['success_per_suite'][s]:.1f}" for s in suites)
        rel = f"{100 * r['of_fp16_same_seeds']:.1f}%" if r["of_fp16_same_seeds"] else ""
        body += (f"| {r['name']} | {r['bpw']:.3f} | {per} | {cells} | {100 * r['success_mean']:.1f} | "
                 f"{100 * r['standard_error']:.1f} | {rel} |\n")  # fmt: skip
    return head + body


def main() -> None:
    """Read the tables, pool, write OUT.json and OUT.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = ap.parse_args()
    from omnimodel.atomic import atomic_path

    tables = load(args.tables)
    rows = pool(tables)
    seeds = sorted(tables)
    with atomic_path(args.out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"seeds": seeds, "sources": [str(p) for p in args.tables], "rows": rows}, indent=1))
    md = markdown(rows, seeds)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(md)
    print(md)


if __name__ == "__main__":
    from omnimodel.errors import OmniError

    try:
        main()
    except OmniError as e:
        sys.exit(f"error: {e}")
