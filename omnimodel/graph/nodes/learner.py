"""learner: after an ok validation, modules the LLM wrote become skills and the run is filed in the knowledge base.

Only runs made with --llm (or with OMNIMODEL_KB_FILE_ALL=1) are filed: a port of existing skills adds nothing.
"""

from __future__ import annotations

import logging
import os
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
    if not (state.get("llm") or learned or os.environ.get("OMNIMODEL_KB_FILE_ALL") == "1"):
        # Runs made only of existing skills teach the knowledge base nothing new; filing them would
        # fill knowledge_base/ with every test port. OMNIMODEL_KB_FILE_ALL=1 files them too.
        return {"timings": {"learner": time.perf_counter() - t0}}
    entry = file_run(run_dir, dict(state), learned)
    try:
        from omnimodel.kb.index import build_index
        from omnimodel.paths import knowledge_base_dir, skills_dir

        build_index([Path(state.get("skills_dir") or skills_dir()), knowledge_base_dir()])
    except Exception as exc:  # noqa: BLE001 - the index is a cache; a failure must not fail an ok port
        log.warning("knowledge base not re-indexed: %s", exc)
    log.info("filed %s", entry)
    return {"timings": {"learner": time.perf_counter() - t0}}
