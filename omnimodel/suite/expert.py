"""Scripted expert: a waypoint state machine per goal (approach, descend, grasp, lift, carry, lower, release, retreat).

It reads the true world state, so it is for demonstrations and tests, not a policy baseline.
Motion is a saturated proportional step towards each waypoint, so each waypoint is reached
exactly and the demonstrations are smooth and deterministic.
"""

from __future__ import annotations

import copy

import numpy as np

from omnimodel.suite.env import MAX_DPOS, MAX_DROT, SuiteEnv
from omnimodel.suite.tasks import CONTAINERS, SHAPES, Goal

APPROACH_Z = 0.13
CARRY_Z = 0.18
TOL = 1e-3
_PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "release", "retreat")


class Expert:
    """Stateful scripted expert for one episode of a SuiteEnv; call `act(env)` once per step."""

    def __init__(self, env: SuiteEnv):
        """Plan the task's goals in order; the expert must see every step of the episode."""
        self.task = env.task
        self.goal_idx = 0
        self.phase = "approach"
        self.wait = 0

    @property
    def done(self) -> bool:
        """True once every goal has been carried out."""
        return self.goal_idx >= len(self.task.goals)

    def act(self, env: SuiteEnv) -> np.ndarray:
        """The 7-D action for the env's current state (LIBERO convention: gripper -1 open, +1 close)."""
        s = env.state
        action = np.zeros(7)
        action[5] = np.clip(-s.yaw / MAX_DROT, -1.0, 1.0)
        if self.done:
            action[6] = -1.0
            return action
        goal = self.task.goals[self.goal_idx]
        obj = self.task.object_index(goal.obj)
        for _ in range(len(_PHASES)):  # advance through phases whose waypoint is already reached
            target, grip, reached = self._waypoint(env, goal, obj)
            if not reached:
                break
            self._advance(env, obj)
            if self.done:
                action[6] = -1.0
                return action
            goal = self.task.goals[self.goal_idx]
            obj = self.task.object_index(goal.obj)
        if target is not None:
            action[:3] = np.clip((target - s.tip) / MAX_DPOS, -1.0, 1.0)
        action[6] = grip
        return action

    def _waypoint(self, env: SuiteEnv, goal: Goal, obj: int) -> tuple[np.ndarray | None, float, bool]:
        """(tip target or None, gripper command, whether this phase is finished)."""
        s = env.state
        p = self.phase
        if p in ("approach", "descend"):
            _, h = SHAPES[env.shapes[obj]]
            z = APPROACH_Z if p == "approach" else s.pos[obj, 2] + min(0.6 * h, h - 0.01)
            target = np.array([s.pos[obj, 0], s.pos[obj, 1], z])
            return target, -1.0, self._at(s.tip, target) and (p == "descend" or s.width >= 0.079)
        if p == "close":
            return None, 1.0, self.wait >= 2
        if p == "lift":
            z = 0.2 if goal.kind == "lift" else CARRY_Z
            target = np.array([s.tip[0], s.tip[1], z])
            return target, 1.0, self._at(s.tip, target) and goal.kind != "lift"
        if p in ("carry", "lower"):
            xy, surface = self._place(env, goal, obj)
            z = CARRY_Z if p == "carry" else surface + 0.012 - s.hold_offset[2]
            target = np.array([xy[0], xy[1], z])
            return target, 1.0, self._at(s.tip, target)
        if p == "release":
            return None, -1.0, self.wait >= 2
        target = np.array([s.tip[0], s.tip[1], APPROACH_Z])  # retreat
        return target, -1.0, self._at(s.tip, target)

    def _advance(self, env: SuiteEnv, obj: int) -> None:
        s = env.state
        if self.phase in ("close", "release"):
            self.wait = 0
        if self.phase == "close" and s.held != obj:
            self.phase = "approach"  # missed the grasp: open and try again
            return
        i = _PHASES.index(self.phase)
        if i + 1 == len(_PHASES):
            self.goal_idx += 1
            self.phase = "approach"
        else:
            self.phase = _PHASES[i + 1]

    def _place(self, env: SuiteEnv, goal: Goal, obj: int) -> tuple[np.ndarray, float]:
        """Where (xy) to put the held object and the surface height there."""
        s = env.state
        if goal.kind == "region":
            x0, x1, y0, y1 = goal.region
            xy = np.array([0.5 * (x0 + x1), np.clip(s.pos[obj, 1], y0 + 0.05, y1 - 0.05)])
            return xy, 0.0
        tgt = self.task.object_index(goal.target)
        xy = s.pos[tgt, :2].copy()
        others = [k for k in range(len(env.shapes)) if s.support[k] == tgt and k != obj]
        if env.shapes[tgt] in CONTAINERS and others:
            xy[0] += 0.03 if s.pos[others[0], 0] <= xy[0] else -0.03
        return xy, env._surface_of(tgt, s.pos)

    def tick(self) -> None:
        """Count a step spent waiting for the fingers (call after each env step)."""
        if self.phase in ("close", "release"):
            self.wait += 1

    @staticmethod
    def _at(tip: np.ndarray, target: np.ndarray) -> bool:
        return bool(np.all(np.abs(tip - target) <= TOL))


def expert_step(expert: Expert, env: SuiteEnv) -> tuple[np.ndarray, tuple]:
    """Act with the expert and step the env: returns (action, env.step result)."""
    action = expert.act(env)
    result = env.step(action)
    expert.tick()
    return action, result


def plan_chunk(expert: Expert, env: SuiteEnv, n: int) -> np.ndarray:
    """The expert's next `n` actions, planned on a copy of the env (neither argument is changed)."""
    sim, exp = env.clone(render_images=False), copy.deepcopy(expert)
    actions = []
    for _ in range(n):
        action, (_, _, terminated, truncated, _) = expert_step(exp, sim)
        actions.append(action)
        if terminated or truncated:
            break
    while len(actions) < n:
        actions.append(actions[-1] if actions else np.zeros(7))
    return np.stack(actions)


def rollout(env: SuiteEnv, seed: int) -> tuple[bool, int]:
    """Run the expert for one seeded episode without keeping frames: (success, steps)."""
    env.reset(seed=seed)
    expert = Expert(env)
    while True:
        _, (_, _, terminated, truncated, info) = expert_step(expert, env)
        if terminated or truncated:
            return bool(info["success"]), int(info["steps"])
