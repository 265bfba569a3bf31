"""learner: after an ok validation, modules the LLM wrote become skills and the run is filed in the knowledge base."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omnimodel.graph.state import PortState

log = logging.getLogger(__name__)


def learner(state: PortState) -> dict:
    """Writes learned.json (skills learned from the run) and knowledge_base/models/<model>-<run>/."""
    from omnimodel.kb_entry import file_run
    from omnimodel.learn import learn_skills

    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    learned = learn_skills(run_dir, dict(state))
    entry = file_run(run_dir, dict(state), learned)
    try:
        from omnimodel.kb.index import build_index
        from omnimodel.paths import knowledge_base_dir, skills_dir

        build_index([Path(state.get("skills_dir") or skills_dir()), knowledge_base_dir()])
    except Exception as exc:  # noqa: BLE001 - the index is a cache; a failure must not fail an ok port
        log.warning("knowledge base not re-indexed: %s", exc)
    log.info("filed %s", entry)
    return {"timings": {"learner": time.perf_counter() - t0}}
