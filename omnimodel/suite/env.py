"""The tabletop simulator: a Gymnasium-style env (reset/step with seeds) over one suite task.

World frame: x to the right of the third-person camera, y away from it, z up; metres and radians.
Actions are LIBERO's 7-D end-effector deltas: (dx, dy, dz, droll, dpitch, dyaw, gripper), each in
[-1, 1], scaled by MAX_DPOS / MAX_DROT per step; only the yaw rotation acts; gripper -1 opens and
+1 closes. Grasping is kinematic: closing the fingers near an object at low height attaches it,
opening drops it onto whatever lies below (a plate/bowl, the flat top of a cube/cylinder, or the
table). Observation images follow LIBERO's raw convention: upside down (rotated 180 degrees);
`upright()` undoes that, as the policies' LIBERO eval does before the policy.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnimodel.errors import ConfigError
from omnimodel.suite import render
from omnimodel.suite.tasks import CONTAINERS, GRASPABLE, SHAPES, STACKABLE, TaskDef

MAX_DPOS = 0.02  # metres per step at |action| = 1
MAX_DROT = 0.1  # radians per step at |action| = 1
OPEN_WIDTH = 0.08
FINGER_SPEED = 0.04  # width change per step: the gripper opens or closes in two steps
GRASP_XY = 0.03  # the tip must be this close (horizontally) to an object's centre to grasp it
WORKSPACE = np.array([[-0.32, 0.32], [-0.28, 0.28], [0.005, 0.30]])
HOME = np.array([0.0, -0.02, 0.20])
JITTER = 0.02  # per-seed uniform jitter of object positions (metres)


@dataclass
class WorldState:
    """Everything that evolves: object base positions, supports, the gripper and the step count."""

    pos: np.ndarray  # (N, 3)
    support: np.ndarray  # (N,) index of the object each rests on, -1 = table
    held: int
    hold_offset: np.ndarray  # (3,) object base minus tip while held
    tip: np.ndarray  # (3,)
    yaw: float
    width: float
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def upright(img: np.ndarray) -> np.ndarray:
    """Rotate a LIBERO-convention (upside-down) image by 180 degrees: what the policy sees."""
    return np.ascontiguousarray(img[::-1, ::-1])


def yaw_to_axis_angle(yaw: float) -> np.ndarray:
    """Axis-angle of a downward-pointing gripper turned by `yaw`: Rz(yaw) @ Rx(pi) = pi about (cos yaw/2, sin yaw/2, 0)."""
    return np.array([math.pi * math.cos(yaw / 2), math.pi * math.sin(yaw / 2), 0.0])


def yaw_to_quat(yaw: float) -> np.ndarray:
    """The same rotation as a robosuite quaternion (x, y, z, w)."""
    return np.array([math.cos(yaw / 2), math.sin(yaw / 2), 0.0, 0.0])


class SuiteEnv:
    """Gymnasium-style env for one task: `reset(seed=...)` -> (obs, info), `step(a)` -> (obs, r, terminated, truncated, info)."""

    def __init__(self, task: TaskDef, render_images: bool = True):
        """Build the env for `task`; `render_images=False` skips the cameras (fast planning rollouts)."""
        self.task = task
        self.render_images = render_images
        self.shapes = [o.shape for o in task.objects]
        self.palette = render.build_palette([o.colour for o in task.objects])
        self.heights = np.array([SHAPES[s][1] for s in self.shapes])
        self.max_steps = task.max_steps
        self.state: WorldState | None = None
        self._labels = np.empty((render.SIZE, render.SIZE), np.uint8)

    # ------------------------------------------------------------ gym API
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode; the same seed gives the same initial scene and gripper pose."""
        rng = np.random.default_rng(seed)
        n = len(self.task.objects)
        pos = np.zeros((n, 3))
        support = np.full(n, -1)
        for i, spec in enumerate(self.task.objects):
            pos[i, :2] = np.asarray(spec.xy) + rng.uniform(-JITTER, JITTER, 2)
        for i in range(n):  # objects that start on a container (same nominal xy) rest on it
            for j in range(n):
                if i != j and self.shapes[j] in CONTAINERS and self.shapes[i] not in CONTAINERS:
                    if np.allclose(self.task.objects[i].xy, self.task.objects[j].xy):
                        pos[i, :2] = pos[j, :2]
                        pos[i, 2] = self._surface_of(j, pos)
                        support[i] = j
        tip = HOME + rng.uniform(-0.03, 0.03, 3)
        yaw = float(rng.uniform(-0.3, 0.3))
        self.state = WorldState(pos, support, -1, np.zeros(3), tip, yaw, OPEN_WIDTH)
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Apply one 7-D action; reward 1 and terminated on success, truncated at max_steps."""
        s = self._require_state()
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape != (7,):
            raise ConfigError(f"action must have 7 values (dpos 3, drot 3, gripper), got {a.shape}")
        s.tip = np.clip(s.tip + a[:3] * MAX_DPOS, WORKSPACE[:, 0], WORKSPACE[:, 1])
        s.yaw = float(np.clip(s.yaw + a[5] * MAX_DROT, -math.pi / 2, math.pi / 2))
        closing = a[6] > 0
        was_open = s.width >= 0.05
        s.width = max(s.width - FINGER_SPEED, 0.0) if closing else min(s.width + FINGER_SPEED, OPEN_WIDTH)
        if s.held >= 0:
            if closing:
                s.pos[s.held] = s.tip + s.hold_offset
                s.pos[s.held, 2] = max(s.pos[s.held, 2], 0.0)
            else:
                self._release()
        elif closing and was_open and s.width < 0.05:
            self._try_grasp()
        if s.held >= 0:
            s.width = max(
                s.width, 2 * SHAPES[self.shapes[s.held]][0] if self.shapes[s.held] != "bowl" else 0.03
            )
        s.steps += 1
        success = self.success()
        truncated = not success and s.steps >= self.max_steps
        return self._obs(), float(success), success, truncated, self._info()

    # ------------------------------------------------------------ physics
    def _surface_of(self, j: int, pos: np.ndarray) -> float:
        """Height at which something placed on object j rests."""
        if self.shapes[j] == "bowl":
            return float(pos[j, 2]) + 0.01
        return float(pos[j, 2] + self.heights[j])

    def _try_grasp(self) -> None:
        s = self._require_state()
        best, best_d = -1, GRASP_XY
        for i, shape in enumerate(self.shapes):
            if shape not in GRASPABLE:
                continue
            d = float(np.hypot(*(s.pos[i, :2] - s.tip[:2])))
            loaded = bool(np.any(s.support == i))  # something stacked on it: take that first
            if loaded and shape != "bowl":
                continue
            if d < best_d and s.pos[i, 2] - 0.01 <= s.tip[2] <= s.pos[i, 2] + self.heights[i] + 0.005:
                best, best_d = i, d
        if best >= 0:
            s.held = best
            s.hold_offset = s.pos[best] - s.tip
            s.support[best] = -1

    def _release(self) -> None:
        s = self._require_state()
        i, s.held = s.held, -1
        xy = s.pos[i, :2]
        best, best_z = -1, 0.0
        for j, shape in enumerate(self.shapes):
            if j == i or (shape not in CONTAINERS and shape not in STACKABLE):
                continue
            if self.shapes[i] in CONTAINERS and shape not in CONTAINERS:
                continue  # a bowl does not balance on a cube
            reach = SHAPES[shape][0] - 0.01 if shape in CONTAINERS else 0.025
            z = self._surface_of(j, s.pos)
            if float(np.hypot(*(s.pos[j, :2] - xy))) < reach and z > best_z and s.pos[i, 2] >= z - 0.03:
                best, best_z = j, z
        s.support[i] = best
        s.pos[i, 2] = best_z

    def success(self) -> bool:
        """True when every goal of the task holds now."""
        s = self._require_state()
        for goal in self.task.goals:
            i = self.task.object_index(goal.obj)
            if goal.kind == "on":
                if s.held == i or s.support[i] != self.task.object_index(goal.target):
                    return False
            elif goal.kind == "lift":
                if s.held != i or s.pos[i, 2] < 0.08:
                    return False
            elif goal.kind == "region":
                x0, x1, y0, y1 = goal.region
                x, y = s.pos[i, :2]
                if s.held == i or s.support[i] != -1 or not (x0 <= x <= x1 and y0 <= y <= y1):
                    return False
            else:
                raise ConfigError(f"unknown goal kind {goal.kind!r}")
        return True

    # ------------------------------------------------------------ observations
    def proprio(self) -> np.ndarray:
        """LIBERO's 8-D state: eef position 3, axis-angle 3, gripper finger positions 2."""
        s = self._require_state()
        half = 0.5 * s.width
        return np.concatenate([s.tip, yaw_to_axis_angle(s.yaw), [half, -half]]).astype(np.float32)

    def joint_states(self) -> np.ndarray:
        """Pseudo joint state (7): tip x, y, z, yaw, finger width, 0, 0 (the suite has no arm joints)."""
        s = self._require_state()
        return np.array([*s.tip, s.yaw, s.width, 0.0, 0.0], np.float32)

    def _view(self) -> render.SceneView:
        s = self._require_state()
        level = np.zeros(len(self.shapes))
        for i in range(len(self.shapes)):
            j, depth = s.support[i], 0
            while j >= 0 and depth < 8:
                depth += self.shapes[j] in STACKABLE
                j = s.support[j]
            level[i] = depth
        return render.SceneView(self.shapes, self.palette, s.pos, level, s.held, s.tip, s.yaw, s.width)

    def _obs(self) -> dict[str, np.ndarray]:
        s = self._require_state()
        state = self.proprio()
        obs = {
            "robot0_eef_pos": state[:3].copy(),
            "robot0_eef_quat": yaw_to_quat(s.yaw).astype(np.float32),
            "robot0_gripper_qpos": state[6:].copy(),
            "state": state,
        }
        if self.render_images:
            view = self._view()
            shape = (render.SIZE, render.SIZE, 3)
            obs["agentview_image"] = render.render_agentview(view, self._labels, np.empty(shape, np.uint8))
            obs["robot0_eye_in_hand_image"] = render.render_wrist(
                view, self._labels, np.empty(shape, np.uint8)
            )
        return obs

    def _info(self) -> dict[str, Any]:
        s = self._require_state()
        return {"success": self.success(), "steps": s.steps, "held": s.held}

    def _require_state(self) -> WorldState:
        if self.state is None:
            raise ConfigError("call reset() before step(): the env has no episode yet")
        return self.state

    # ------------------------------------------------------------ planning helpers
    def clone(self, render_images: bool = False) -> SuiteEnv:
        """An independent copy of this env in its current state (no cameras by default)."""
        other = SuiteEnv(self.task, render_images=render_images)
        other.state = copy.deepcopy(self.state)
        return other
