"""Slots: the module roles an architecture's graph calls one graph function for (the arch lists them: Arch.slots).

A module of an unknown class in a known role is realised by C++ the agent writes into
`cpp/modules/<skill>.h` with the role's signature (taken from the role's hand-written skill);
its weights are read by name from the role's `named_tensors` (every GGUF tensor under the
role's prefix, see templates/cpp), so new parameter names need no template change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from omnimodel.errors import ConfigError

MODULES_DIR = "modules"


@dataclass(frozen=True)
class Slot:
    """One role: the hand-written skill that normally fills it, the module names it covers and the GGUF prefix."""

    skill: str
    pattern: str
    prefix: str  # may hold {0} for the layer index
    weights: str  # the C++ weights struct passed to the function

    @property
    def header(self) -> str:
        """The file (relative to cpp/) the agent writes."""
        return f"{MODULES_DIR}/{self.skill}.h"

    def gguf_prefix(self, module: str) -> str:
        """The GGUF prefix of one module in this role (`blk.3.` for layer 3)."""
        m = re.fullmatch(self.pattern, module)
        return self.prefix.format(*(m.groups() if m else ()))


def slots(arch=None) -> tuple[Slot, ...]:
    """The roles of an arch's graph (Arch.slots); without one, every registered arch's (first wins per pattern)."""
    if arch is not None:
        from omnimodel.ggufio.names import arch_for

        return tuple(arch_for(arch).slots())
    from omnimodel import archs

    out: list[Slot] = []
    for a in archs.registry().values():
        try:
            table = a.slots()
        except Exception:  # an arch without slots has no agent-written roles
            continue
        out += [s for s in table if all(s.pattern != o.pattern and s.skill != o.skill for o in out)]
    return tuple(out)


def slot_for(module: str, arch=None) -> Slot | None:
    """The slot whose role covers `module`, or None."""
    for slot in slots(arch):
        if re.fullmatch(slot.pattern, module):
            return slot
    return None


def slot_by_skill(skill: str, arch=None) -> Slot:
    """The slot a role skill fills."""
    table = slots(arch)
    for slot in table:
        if slot.skill == skill:
            return slot
    raise ConfigError(f"no slot for skill {skill!r}; slots: {', '.join(s.skill for s in table)}")


def signature(skills_root: Path, slot: Slot) -> str:
    """The C++ signature of the role's graph function, read from its hand-written skill's template."""
    path = Path(skills_root) / slot.skill / "template.cpp.j2"
    if not path.is_file():
        raise ConfigError(f"slot {slot.skill}: {path} missing; the role's signature comes from its skill")
    m = re.search(r"^static ggml_tensor \* build_\w+\([^{]*\)", path.read_text(encoding="utf-8"), re.M)
    if not m:
        raise ConfigError(f"{path}: no `static ggml_tensor * build_...(...)` function")
    return " ".join(m.group(0).split())


def function_name(sig: str) -> str:
    """`build_proprio_projector` from its signature."""
    return re.search(r"(build_\w+)\(", sig).group(1)


def stub(slot: Slot, sig: str, module: str) -> str:
    """A compiling placeholder the agent replaces: it fails at run time naming the slot."""
    return (
        f"// Slot {slot.skill} for module {module}: the agent writes this function (keep the signature).\n"
        f'// Weights: W.get("name") returns the GGUF tensor {slot.gguf_prefix(module)}<name>; W.has("name") tests for it.\n'
        f"{sig} {{\n"
        f'    throw omni_error(OMNI_ERR_UNKNOWN_MODULE, "{module}: the agent has not written {function_name(sig)} yet");\n'
        f"}}\n"
    )
