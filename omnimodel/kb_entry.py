"""File a converted model in the knowledge base: knowledge_base/models/<model>-<run>/."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

from omnimodel.analysis import write_json
from omnimodel.atomic import atomic_dir
from omnimodel.paths import knowledge_base_dir


def _load(path: Path) -> dict | list:
    return json.loads(path.read_text()) if path.exists() else {}


def file_run(run_dir: Path, state: dict, learned: list[dict]) -> Path:
    """Write entry.json, plan.json and README.md for an ok run; returns the entry folder."""
    run_dir = Path(run_dir)
    plan = _load(run_dir / "plan.json")
    validation = _load(run_dir / "validation.json")
    model = plan.get("model") or state.get("model") or "model"
    target = knowledge_base_dir() / "models" / f"{model}-{run_dir.name}"
    skills_used = sorted(
        {u["skill"] for u in plan.get("units", []) if u.get("skill")}
        | {g["skill"] for g in plan.get("glue", []) if g.get("skill")}
    )
    modules = [
        {
            "name": m["name"],
            "realised_by": m.get("realised_by"),
            "cosine": m.get("cosine"),
            "max_abs_err": m.get("max_abs_err"),
        }
        for m in validation.get("modules", [])
    ]
    usage = state.get("llm_usage") or {}
    entry = {
        "model": model,
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "checkpoint": state.get("checkpoint"),
        "quant": state.get("quant"),
        "status": "ok",
        "date": datetime.date.today().isoformat(),
        "skills_used": skills_used,
        "realised_by_llm": [u["name"] for u in plan.get("units", []) if u.get("realised_by") == "llm"],
        "learned_skills": learned,
        "modules": modules,
        "end_to_end": validation.get("end_to_end", {}),
        "llm": {k: usage.get(k, 0) for k in ("calls", "input_tokens", "output_tokens")},
    }
    with atomic_dir(target) as tmp:
        write_json(tmp / "entry.json", entry)
        if (run_dir / "plan.json").exists():
            shutil.copyfile(run_dir / "plan.json", tmp / "plan.json")
        lines = [
            f"# {model} — run {run_dir.name}",
            "",
            f"Ported OK ({state.get('quant')}); end to end: {entry['end_to_end']}.",
            f"Skills used: {', '.join(skills_used)}.",
            f"Written by the LLM: {', '.join(entry['realised_by_llm']) or 'none'}; learned skills: "
            + (", ".join(f"{x['skill']} ({x['status']})" for x in learned) or "none")
            + ".",
            "",
            "| module | realised by | cosine |",
            "|---|---|---|",
            *(f"| {m['name']} | {m['realised_by']} | {m['cosine']} |" for m in modules),
        ]
        (tmp / "README.md").write_text("\n".join(lines) + "\n")
    return target
