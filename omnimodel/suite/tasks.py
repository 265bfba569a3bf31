"""The four task suites (spatial, object, goal, long), ten tasks each, mirroring LIBERO's structure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from omnimodel.errors import ConfigError

# Object geometry in metres: (half width / radius, height). Positions are the base centre.
SHAPES: dict[str, tuple[float, float]] = {
    "cube": (0.025, 0.05),
    "cylinder": (0.022, 0.06),
    "ball": (0.025, 0.05),
    "bowl": (0.065, 0.04),
    "plate": (0.075, 0.012),
}
GRASPABLE = frozenset({"cube", "cylinder", "ball", "bowl"})
CONTAINERS = frozenset({"bowl", "plate"})  # things go "in"/"on" them anywhere within their rim
STACKABLE = frozenset({"cube", "cylinder"})  # flat tops: things go "on top of" them

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "orange": (245, 135, 25),
    "pink": (240, 110, 190),
    "purple": (135, 55, 195),
    "white": (240, 240, 240),
    "black": (35, 35, 40),
    "cyan": (40, 200, 215),
    "brown": (135, 85, 45),
    "cream": (225, 220, 195),
    "grey": (140, 140, 150),
}

# Max episode length per suite, scaled from LIBERO's 220/280/300/520 to our expert's lengths
# (about twice the longest expert demonstration of the suite).
MAX_STEPS: dict[str, int] = {
    "libero_spatial": 130,
    "libero_object": 130,
    "libero_goal": 130,
    "libero_10": 250,
}
SUITE_NAMES: tuple[str, ...] = tuple(MAX_STEPS)


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a scene: unique name, shape, colour name and nominal base position (x, y)."""

    name: str
    shape: str
    colour: str
    xy: tuple[float, float]


@dataclass(frozen=True)
class Goal:
    """A success condition: `on` (obj rests on/in target), `lift` (obj held high) or `region` (obj on the table inside a box)."""

    kind: str
    obj: str
    target: str | None = None
    region: tuple[float, float, float, float] | None = None  # xmin, xmax, ymin, ymax


@dataclass(frozen=True)
class TaskDef:
    """One task: suite, LIBERO-style name, language instruction, scene and goals (all must hold at once)."""

    suite: str
    name: str
    instruction: str
    objects: tuple[ObjectSpec, ...]
    goals: tuple[Goal, ...]
    max_steps: int

    def object_index(self, name: str) -> int:
        """Index of the object called `name` in this task's scene."""
        for i, spec in enumerate(self.objects):
            if spec.name == name:
                return i
        raise ConfigError(f"task {self.name!r} has no object {name!r}")


def task_name(instruction: str) -> str:
    """LIBERO-style task name derived from the instruction (lowercase words joined by '_')."""
    return re.sub(r"[^a-z0-9]+", "_", instruction.lower()).strip("_")


def _task(suite: str, instruction: str, objects: list[ObjectSpec], goals: list[Goal]) -> TaskDef:
    return TaskDef(suite, task_name(instruction), instruction, tuple(objects), tuple(goals), MAX_STEPS[suite])


def _o(name: str, x: float, y: float) -> ObjectSpec:
    """Object from a name 'colour shape[_k]' such as 'blue cube_2', 'plate' or 'basket'."""
    base = name.split("_")[0]
    words = base.split()
    if base == "plate":
        return ObjectSpec(name, "plate", "cream", (x, y))
    if base == "bowl":
        return ObjectSpec(name, "bowl", "grey", (x, y))
    if base == "basket":
        return ObjectSpec(name, "bowl", "brown", (x, y))
    return ObjectSpec(name, words[1], words[0], (x, y))


def _on(obj: str, target: str) -> Goal:
    return Goal("on", obj, target)


def _spatial() -> list[TaskDef]:
    s = "libero_spatial"
    cube = "blue cube"
    lr = [
        _o(f"{cube}_1", -0.16, -0.06),
        _o(f"{cube}_2", 0.16, -0.06),
        _o("plate", 0.0, 0.13),
        _o("bowl", 0.0, -0.17),
    ]
    fb = [
        _o(f"{cube}_1", 0.15, -0.15),
        _o(f"{cube}_2", 0.15, 0.1),
        _o("plate", -0.15, 0.0),
        _o("bowl", -0.05, 0.16),
    ]
    nb = [
        _o("bowl", -0.18, 0.1),
        _o(f"{cube}_1", -0.05, 0.1),
        _o(f"{cube}_2", 0.16, -0.12),
        _o("plate", 0.14, 0.12),
    ]
    np_ = [
        _o("plate", 0.17, -0.02),
        _o(f"{cube}_1", 0.05, -0.05),
        _o(f"{cube}_2", -0.2, 0.1),
        _o("bowl", -0.12, -0.14),
    ]
    lr2 = [
        _o(f"{cube}_1", -0.18, 0.05),
        _o(f"{cube}_2", 0.18, 0.05),
        _o("bowl", 0.0, -0.14),
        _o("plate", 0.0, 0.17),
    ]
    mid = [
        _o(f"{cube}_1", -0.18, -0.1),
        _o(f"{cube}_2", 0.0, -0.1),
        _o(f"{cube}_3", 0.18, -0.1),
        _o("plate", -0.1, 0.13),
        _o("bowl", 0.12, 0.13),
    ]
    onp = [
        _o("plate", -0.14, -0.08),
        _o(f"{cube}_1", -0.14, -0.08),
        _o(f"{cube}_2", 0.05, 0.14),
        _o("bowl", 0.17, -0.08),
    ]
    return [
        _task(s, "pick up the cube on the left and place it on the plate", lr, [_on(f"{cube}_1", "plate")]),
        _task(s, "pick up the cube on the right and place it on the plate", lr, [_on(f"{cube}_2", "plate")]),
        _task(s, "pick up the cube in the front and place it on the plate", fb, [_on(f"{cube}_1", "plate")]),
        _task(s, "pick up the cube at the back and place it on the plate", fb, [_on(f"{cube}_2", "plate")]),
        _task(
            s, "pick up the cube next to the bowl and place it on the plate", nb, [_on(f"{cube}_1", "plate")]
        ),
        _task(
            s, "pick up the cube next to the plate and place it in the bowl", np_, [_on(f"{cube}_1", "bowl")]
        ),
        _task(s, "pick up the cube on the left and place it in the bowl", lr2, [_on(f"{cube}_1", "bowl")]),
        _task(s, "pick up the cube on the right and place it in the bowl", lr2, [_on(f"{cube}_2", "bowl")]),
        _task(
            s, "pick up the cube in the middle and place it on the plate", mid, [_on(f"{cube}_2", "plate")]
        ),
        _task(s, "pick up the cube on the plate and place it in the bowl", onp, [_on(f"{cube}_1", "bowl")]),
    ]


OBJECT_SUITE_ITEMS = (
    "red cube", "green cube", "yellow cube", "blue ball", "orange ball",
    "pink ball", "purple cylinder", "white cylinder", "black cylinder", "cyan cylinder",
)  # fmt: skip
_OBJECT_SLOTS = ((-0.2, -0.1), (-0.04, -0.16), (0.12, -0.13), (0.22, 0.02), (-0.2, 0.1))


def _object() -> list[TaskDef]:
    tasks = []
    n = len(OBJECT_SUITE_ITEMS)
    for i, target in enumerate(OBJECT_SUITE_ITEMS):
        names = [target] + [OBJECT_SUITE_ITEMS[(i + k) % n] for k in (3, 5, 7)]
        slots = [_OBJECT_SLOTS[(i + j) % len(_OBJECT_SLOTS)] for j in range(len(names))]
        objects = [_o(nm, x, y) for nm, (x, y) in zip(names, slots, strict=True)] + [_o("basket", 0.04, 0.13)]
        tasks.append(
            _task(
                "libero_object",
                f"pick up the {target} and place it in the basket",
                objects,
                [_on(target, "basket")],
            )
        )
    return tasks


def _goal_scene() -> list[ObjectSpec]:
    return [
        _o("red cube", -0.18, -0.08),
        _o("yellow ball", 0.0, -0.15),
        _o("green cylinder", 0.18, -0.06),
        _o("bowl", -0.12, 0.13),
        _o("plate", 0.15, 0.13),
    ]


def _goal() -> list[TaskDef]:
    s, sc = "libero_goal", _goal_scene()
    left = (-0.32, -0.2, -0.28, 0.28)
    return [
        _task(s, "put the red cube in the bowl", sc, [_on("red cube", "bowl")]),
        _task(s, "put the red cube on the plate", sc, [_on("red cube", "plate")]),
        _task(s, "put the yellow ball in the bowl", sc, [_on("yellow ball", "bowl")]),
        _task(s, "put the yellow ball on the plate", sc, [_on("yellow ball", "plate")]),
        _task(s, "put the green cylinder in the bowl", sc, [_on("green cylinder", "bowl")]),
        _task(s, "put the green cylinder on the plate", sc, [_on("green cylinder", "plate")]),
        _task(s, "put the bowl on the plate", sc, [_on("bowl", "plate")]),
        _task(s, "put the red cube on top of the green cylinder", sc, [_on("red cube", "green cylinder")]),
        _task(s, "pick up the yellow ball and hold it up", sc, [Goal("lift", "yellow ball")]),
        _task(
            s,
            "move the green cylinder to the left side of the table",
            sc,
            [Goal("region", "green cylinder", region=left)],
        ),
    ]


def _long() -> list[TaskDef]:
    s = "libero_10"
    a = [
        _o("red cube", -0.18, -0.1),
        _o("blue cube", 0.18, -0.1),
        _o("bowl", -0.12, 0.13),
        _o("plate", 0.14, 0.13),
    ]
    b = [
        _o("yellow ball", -0.05, -0.15),
        _o("green cylinder", 0.18, -0.05),
        _o("bowl", 0.12, 0.14),
        _o("plate", -0.16, 0.08),
    ]
    c = [
        _o("red cube", 0.0, -0.15),
        _o("green cylinder", -0.18, -0.05),
        _o("yellow ball", 0.2, -0.05),
        _o("bowl", 0.12, 0.14),
        _o("plate", -0.1, 0.14),
    ]
    d = [
        _o("bowl", -0.16, -0.1),
        _o("plate", 0.14, 0.12),
        _o("red cube", 0.16, -0.12),
        _o("blue cube", -0.1, 0.14),
    ]
    left = (-0.32, -0.2, -0.28, 0.28)
    return [
        _task(
            s,
            "put the red cube in the bowl and put the blue cube on the plate",
            a,
            [_on("red cube", "bowl"), _on("blue cube", "plate")],
        ),
        _task(
            s,
            "put the blue cube in the bowl and put the red cube on the plate",
            a,
            [_on("blue cube", "bowl"), _on("red cube", "plate")],
        ),
        _task(
            s,
            "put the yellow ball on the plate and put the green cylinder in the bowl",
            b,
            [_on("yellow ball", "plate"), _on("green cylinder", "bowl")],
        ),
        _task(
            s,
            "put both the yellow ball and the green cylinder on the plate",
            b,
            [_on("yellow ball", "plate"), _on("green cylinder", "plate")],
        ),
        _task(
            s,
            "put both the red cube and the blue cube on the plate",
            a,
            [_on("red cube", "plate"), _on("blue cube", "plate")],
        ),
        _task(
            s,
            "put the red cube on the green cylinder and put the yellow ball in the bowl",
            c,
            [_on("red cube", "green cylinder"), _on("yellow ball", "bowl")],
        ),
        _task(
            s,
            "put the bowl on the plate and put the red cube in the bowl",
            d,
            [_on("bowl", "plate"), _on("red cube", "bowl")],
        ),
        _task(
            s,
            "move the red cube to the left side of the table and put the yellow ball on the plate",
            c,
            [Goal("region", "red cube", region=left), _on("yellow ball", "plate")],
        ),
        _task(
            s,
            "put the green cylinder on the plate and put the red cube in the bowl",
            c,
            [_on("green cylinder", "plate"), _on("red cube", "bowl")],
        ),
        _task(
            s,
            "put the blue cube on the red cube and put the bowl on the plate",
            d,
            [_on("blue cube", "red cube"), _on("bowl", "plate")],
        ),
    ]


_SUITES: dict[str, list[TaskDef]] = {
    "libero_spatial": _spatial(),
    "libero_object": _object(),
    "libero_goal": _goal(),
    "libero_10": _long(),
}


def suite_tasks(suite: str) -> list[TaskDef]:
    """The ten tasks of `suite` (libero_spatial, libero_object, libero_goal or libero_10)."""
    if suite not in _SUITES:
        raise ConfigError(f"unknown suite {suite!r}; choose from {', '.join(SUITE_NAMES)}")
    return list(_SUITES[suite])


def get_task(suite: str, name: str) -> TaskDef:
    """The task called `name` (or whose instruction is `name`) in `suite`."""
    for task in suite_tasks(suite):
        if name in (task.name, task.instruction):
            return task
    raise ConfigError(f"suite {suite!r} has no task {name!r}; see `omnimodel suite list`")
