"""The arch seam: nothing outside omnimodel/archs/ names an architecture (issue 16).

The rule as a test: the words openvla / openvla-oft / openvla_oft / oft / pi0 / pi05 / pi0.5 / π0 /
paligemma (case-insensitive, whole words, so "soft" and "often" do not count) appear in omnimodel/ and templates/ only under
omnimodel/archs/. The registry itself is pyproject's entry point, outside both trees.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("omnimodel", "templates")
ARCHS = ROOT / "omnimodel" / "archs"
WORD = re.compile(
    r"(?<![A-Za-z0-9_])(?:openvla[-_]oft|openvla|oft|pi0(?:\.5|5)?|π0(?:\.5)?|paligemma)(?![A-Za-z0-9_])", re.IGNORECASE
)


def arch_mentions(root: Path = ROOT) -> list[str]:
    """`path:line: text` of every arch-name word in the scanned trees outside omnimodel/archs/."""
    found = []
    for tree in SCANNED:
        for path in sorted((root / tree).rglob("*")):
            if not path.is_file() or ARCHS in path.parents or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root)
            if WORD.search(rel.as_posix()):
                found.append(f"{rel}: the path names an arch")
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary files (test vectors) hold weights, not names
            for i, line in enumerate(text.splitlines(), 1):
                if WORD.search(line):
                    found.append(f"{rel}:{i}: {line.strip()[:100]}")
    return found


def test_the_word_rule_counts_words_not_substrings():
    assert WORD.search("from omnimodel.archs.openvla_oft import names")
    assert WORD.search("OpenVLA-OFT's eval")
    assert WORD.search("# the OFT head")
    assert WORD.search("openvla")
    assert not WORD.search("soft often loft software")
    assert not WORD.search("openvlax")
    assert WORD.search("the pi05 expert") and WORD.search("π0.5") and WORD.search("PaliGemma's table")
    assert not WORD.search("pi0x") and not WORD.search("api05")


def test_no_arch_name_outside_the_arch_packages():
    found = arch_mentions()
    assert not found, f"{len(found)} arch names outside omnimodel/archs/:\n" + "\n".join(found)
