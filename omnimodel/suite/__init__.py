"""A small, fast, deterministic numpy manipulation suite mirroring LIBERO's four suites."""

from omnimodel.suite.env import SuiteEnv, upright
from omnimodel.suite.expert import Expert, plan_chunk, rollout
from omnimodel.suite.tasks import SUITE_NAMES, TaskDef, get_task, suite_tasks

__all__ = [
    "SUITE_NAMES",
    "Expert",
    "SuiteEnv",
    "TaskDef",
    "get_task",
    "plan_chunk",
    "rollout",
    "suite_tasks",
    "upright",
]
