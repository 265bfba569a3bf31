"""File a converted model in the knowledge base: knowledge_base/models/<model>-<run>/."""

from __future__ import annotations

import datetime
from pathlib import Path

from omnimodel.analysis import write_json
from omnimodel.atomic import atomic_dir
from omnimodel.paths import knowledge_base_dir
from omnimodel.plan import Plan
from omnimodel.validation import Validation


def file_run(run_dir: Path, state: dict, learned: list[dict]) -> Path:
    """Write entry.json, plan.json and README.md for an ok run; returns the entry folder."""
    run_dir = Path(run_dir)
    plan = Plan.read(run_dir)
    validation = Validation.read(run_dir)
    model = plan.model or state.get("model") or "model"
    target = knowledge_base_dir() / "models" / f"{model}-{run_dir.name}"
    skills_used = plan.skills_used()
    modules = [
        {
            "name": m["name"],
            "realised_by": m.get("realised_by"),
            "cosine": m.get("cosine"),
            "max_abs_err": m.get("max_abs_err"),
        }
        for m in validation.modules
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
        "realised_by_llm": [u["name"] for u in plan.llm_units()],
        "learned_skills": learned,
        "modules": modules,
        "end_to_end": validation.end_to_end,
        "llm": {k: usage.get(k, 0) for k in ("calls", "input_tokens", "output_tokens")},
    }
    with atomic_dir(target) as tmp:
        write_json(tmp / "entry.json", entry)
        plan.write(tmp / "plan.json")
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
