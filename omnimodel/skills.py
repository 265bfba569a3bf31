"""The skills registry: load skill folders, match a PyTorch module's signature to a skill, add and remove skills.

A skill is a folder `skills/<name>/` holding
  * `SKILL.md`: YAML front matter with `name`, `description`, `applies_to` (a list of matchers
    `{class: Block, has_params: [ls1.scale_factor], lacks_params: [...]}`; parameter names are
    relative to the module and may use `*` wildcards), `provenance` (`hand-written` or a mapping
    naming the run it was learned from) and `version`; the body is free Markdown;
  * `template.cpp.j2`: the Jinja2 template of the module's graph-building function;
  * `tensor_map.yaml`: PyTorch parameter name -> `{gguf: NAME_SUFFIX, transforms: [...]}`
    (a bare string means no transforms);
  * `test_vector.gguf` or `test_vector.safetensors`: inputs (`in.0`, `in.1`, ...) and the expected
    output (`out`) of a tiny instance.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnimodel.atomic import atomic_dir
from omnimodel.errors import ConfigError
from omnimodel.paths import skills_dir

log = logging.getLogger(__name__)


class SkillError(ConfigError):
    """A skill folder is invalid, missing, or clashes with an existing skill."""


SKILL_FILE = "SKILL.md"
TEMPLATE_FILE = "template.cpp.j2"
TENSOR_MAP_FILE = "tensor_map.yaml"
TEST_VECTOR_FILES = ("test_vector.gguf", "test_vector.safetensors")
REQUIRED_KEYS = ("name", "description", "applies_to", "provenance", "version")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MATCHER_KEYS = {"class", "has_params", "lacks_params"}


@dataclass(frozen=True)
class Matcher:
    """One signature: the module's class name (None = any) and parameter names it has and lacks."""

    module_class: str | None = None
    has_params: tuple[str, ...] = ()
    lacks_params: tuple[str, ...] = ()

    @property
    def specificity(self) -> int:
        """How much this matcher pins down: one point for the class and each named parameter."""
        return (self.module_class is not None) + len(self.has_params) + len(self.lacks_params)

    def matches(self, module_class: str, param_names: list[str]) -> bool:
        """True when the class agrees, every `has` pattern names a parameter and no `lacks` pattern does."""
        if self.module_class is not None and self.module_class != module_class:
            return False
        present = lambda pattern: any(fnmatch.fnmatchcase(p, pattern) for p in param_names)  # noqa: E731
        return all(present(p) for p in self.has_params) and not any(present(p) for p in self.lacks_params)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form of SKILL.md's applies_to entries."""
        out: dict[str, Any] = {}
        if self.module_class is not None:
            out["class"] = self.module_class
        if self.has_params:
            out["has_params"] = list(self.has_params)
        if self.lacks_params:
            out["lacks_params"] = list(self.lacks_params)
        return out


@dataclass(frozen=True)
class TensorMapEntry:
    """Where one PyTorch parameter goes in GGUF and how it is transformed on the way."""

    gguf: str
    transforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skill:
    """A loaded, validated skill folder."""

    name: str
    description: str
    applies_to: tuple[Matcher, ...]
    provenance: Any
    version: str
    path: Path
    tensor_map: dict[str, TensorMapEntry] = field(default_factory=dict)
    body: str = ""

    @property
    def template_path(self) -> Path:
        """The Jinja2 C++ template."""
        return self.path / TEMPLATE_FILE

    @property
    def test_vector_path(self) -> Path:
        """The parity test vector (GGUF or safetensors)."""
        return next(p for p in (self.path / n for n in TEST_VECTOR_FILES) if p.is_file())

    def best_matcher(self, module_class: str, param_names: list[str]) -> Matcher | None:
        """The most specific of this skill's matchers that matches, or None."""
        hits = [m for m in self.applies_to if m.matches(module_class, param_names)]
        return max(hits, key=lambda m: m.specificity) if hits else None


def split_front_matter(text: str, where: Path) -> tuple[dict[str, Any], str]:
    """The YAML front matter (as a dict) and the Markdown body of a SKILL.md."""
    match = re.match(r"^---[ \t]*\n(.*?)\n---[ \t]*(?:\n|$)(.*)$", text, re.S)
    if not match:
        raise SkillError(f"{where}: SKILL.md must start with YAML front matter between '---' lines")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise SkillError(f"{where}: front matter is not valid YAML ({_first_line(exc)})") from exc
    if not isinstance(meta, dict):
        raise SkillError(f"{where}: front matter must be a YAML mapping")
    return meta, match.group(2)


def parse_matcher(raw: Any, where: Path) -> Matcher:
    """A Matcher from one applies_to entry (a mapping, or a bare class name)."""
    if isinstance(raw, str):
        return Matcher(raw)
    if not isinstance(raw, dict) or not raw:
        raise SkillError(
            f"{where}: applies_to entries must be mappings like {{class: Block, has_params: [...]}}"
        )
    unknown = set(raw) - MATCHER_KEYS
    if unknown:
        raise SkillError(
            f"{where}: unknown applies_to key {sorted(unknown)[0]!r}; use {sorted(MATCHER_KEYS)}"
        )
    lists = {}
    for key in ("has_params", "lacks_params"):
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise SkillError(f"{where}: applies_to {key} must be a list of parameter names")
        lists[key] = tuple(value)
    module_class = raw.get("class")
    if module_class is not None and not isinstance(module_class, str):
        raise SkillError(f"{where}: applies_to class must be a class name string")
    matcher = Matcher(module_class, lists["has_params"], lists["lacks_params"])
    if matcher.specificity == 0:
        raise SkillError(f"{where}: an applies_to entry must name a class or parameters")
    return matcher


def parse_tensor_map(path: Path) -> dict[str, TensorMapEntry]:
    """The tensor map of a skill: PyTorch parameter name -> GGUF suffix + transforms."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SkillError(f"{path}: not valid YAML ({_first_line(exc)})") from exc
    if not isinstance(raw, dict) or not raw:
        raise SkillError(f"{path}: must map PyTorch parameter names to {{gguf: SUFFIX, transforms: [...]}}")
    out: dict[str, TensorMapEntry] = {}
    for param, value in raw.items():
        if isinstance(value, str):
            out[str(param)] = TensorMapEntry(value)
            continue
        if not isinstance(value, dict) or not isinstance(value.get("gguf"), str):
            raise SkillError(f"{path}: entry {param!r} needs a 'gguf' name suffix")
        transforms = value.get("transforms") or []
        if not isinstance(transforms, list) or not all(isinstance(t, str) for t in transforms):
            raise SkillError(f"{path}: entry {param!r} transforms must be a list of strings")
        out[str(param)] = TensorMapEntry(value["gguf"], tuple(transforms))
    return out


def check_test_vector(path: Path) -> list[str]:
    """Tensor names of a test vector; it must hold inputs (in.N / input*) and an output (out / expected*)."""
    try:
        if path.suffix == ".gguf":
            import gguf

            names = [t.name for t in gguf.GGUFReader(str(path)).tensors]
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as handle:
                names = list(handle.keys())
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        raise SkillError(f"{path}: cannot read the test vector ({_first_line(exc)})") from exc
    has_in = any(n.startswith(("in.", "input")) for n in names)
    has_out = any(n == "out" or n.startswith(("out.", "expected")) for n in names)
    if not (has_in and has_out):
        raise SkillError(
            f"{path}: a test vector needs input tensors (in.0, ...) and the expected output (out)"
        )
    return names


def load_skill(folder: Path) -> Skill:
    """Load and validate one skill folder; raise SkillError naming the first problem."""
    folder = Path(folder)
    skill_md = folder / SKILL_FILE
    if not skill_md.is_file():
        raise SkillError(
            f"{folder}: no {SKILL_FILE}; a skill folder needs SKILL.md, template, tensor map, test vector"
        )
    meta, body = split_front_matter(skill_md.read_text(encoding="utf-8"), skill_md)
    missing = [k for k in REQUIRED_KEYS if meta.get(k) in (None, "", [])]
    if missing:
        raise SkillError(f"{skill_md}: front matter lacks {', '.join(missing)}")
    name = str(meta["name"])
    if not NAME_RE.match(name):
        raise SkillError(f"{skill_md}: name {name!r} must be lower_snake_case")
    applies = meta["applies_to"]
    if not isinstance(applies, list):
        raise SkillError(f"{skill_md}: applies_to must be a list of matchers")
    matchers = tuple(parse_matcher(m, skill_md) for m in applies)
    template = folder / TEMPLATE_FILE
    if not template.is_file():
        raise SkillError(f"{folder}: no {TEMPLATE_FILE}")
    _check_template(template)
    tensor_map_path = folder / TENSOR_MAP_FILE
    if not tensor_map_path.is_file():
        raise SkillError(f"{folder}: no {TENSOR_MAP_FILE}")
    vectors = [folder / n for n in TEST_VECTOR_FILES if (folder / n).is_file()]
    if not vectors:
        raise SkillError(f"{folder}: no test vector ({' or '.join(TEST_VECTOR_FILES)})")
    check_test_vector(vectors[0])
    return Skill(
        name=name,
        description=str(meta["description"]).strip(),
        applies_to=matchers,
        provenance=meta["provenance"],
        version=str(meta["version"]),
        path=folder,
        tensor_map=parse_tensor_map(tensor_map_path),
        body=body,
    )


def _check_template(path: Path) -> None:
    """Raise SkillError when the template is not valid Jinja2."""
    import jinja2

    try:
        jinja2.Environment().parse(path.read_text(encoding="utf-8"))
    except jinja2.TemplateSyntaxError as exc:
        raise SkillError(f"{path}:{exc.lineno}: template is not valid Jinja2 ({exc.message})") from exc


def load_skills(directory: Path | None = None, strict: bool = False) -> list[Skill]:
    """Every valid skill under `directory` (default skills/), sorted by name.

    Invalid folders are skipped with a warning (see `invalid_skills`), or raise when `strict`.
    """
    directory = Path(directory) if directory is not None else skills_dir()
    if not directory.is_dir():
        return []
    skills: list[Skill] = []
    for folder in _skill_folders(directory):
        try:
            skills.append(load_skill(folder))
        except SkillError as exc:
            if strict:
                raise
            log.warning("skipping invalid skill: %s", exc)
    seen: dict[str, Path] = {}
    for skill in skills:
        if skill.name in seen:
            raise SkillError(
                f"skills {seen[skill.name]} and {skill.path} share the name {skill.name!r}; rename one"
            )
        seen[skill.name] = skill.path
    return skills


def invalid_skills(directory: Path | None = None) -> list[tuple[Path, str]]:
    """Folders under skills/ that do not load, each with the reason."""
    directory = Path(directory) if directory is not None else skills_dir()
    problems = []
    for folder in _skill_folders(directory) if directory.is_dir() else []:
        try:
            load_skill(folder)
        except SkillError as exc:
            problems.append((folder, str(exc)))
    return problems


def _skill_folders(directory: Path) -> list[Path]:
    return [d for d in sorted(directory.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def match_skill(module_class: str, param_names: list[str], skills: list[Skill]) -> Skill | None:
    """The skill whose matcher fits the module most specifically (ties: the later version, then the name)."""
    best: tuple[int, Skill] | None = None
    for skill in sorted(skills, key=lambda s: s.name):
        matcher = skill.best_matcher(module_class, param_names)
        if matcher is None:
            continue
        if (
            best is None
            or matcher.specificity > best[0]
            or (
                matcher.specificity == best[0] and _version_key(skill.version) > _version_key(best[1].version)
            )
        ):
            best = (matcher.specificity, skill)
    return best[1] if best else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)


def add_skill(
    src_dir: Path, directory: Path | None = None, *, replace: bool = False, reindex: bool = True
) -> Skill:
    """Validate a skill folder, copy it atomically into skills/<name>/ and re-index the knowledge base."""
    directory = Path(directory) if directory is not None else skills_dir()
    skill = load_skill(Path(src_dir))
    target = directory / skill.name
    if Path(src_dir).resolve() == target.resolve():
        raise SkillError(f"{src_dir} is already the installed skill {skill.name!r}")
    if target.exists() and not replace:
        raise SkillError(
            f"skill {skill.name!r} already exists at {target}; remove it first or pass --replace"
        )
    with atomic_dir(target) as staging:
        shutil.copytree(
            src_dir, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", ".*")
        )
    installed = load_skill(target)
    if reindex:
        _reindex(directory)
    log.info("added skill %s v%s at %s", installed.name, installed.version, target)
    return installed


def remove_skill(name: str, directory: Path | None = None, *, reindex: bool = True) -> Path:
    """Delete skills/<name>/ and re-index the knowledge base; returns the removed path."""
    directory = Path(directory) if directory is not None else skills_dir()
    if not NAME_RE.match(name):
        raise SkillError(f"{name!r} is not a skill name (lower_snake_case)")
    target = directory / name
    if not (target / SKILL_FILE).is_file():
        raise SkillError(f"no skill named {name!r} in {directory}; see `omnimodel skills list`")
    doomed = directory / f".{name}.removing"  # rename first so no half-deleted skill ever loads
    if doomed.exists():
        shutil.rmtree(doomed)
    target.rename(doomed)
    shutil.rmtree(doomed)
    if reindex:
        _reindex(directory)
    return target


def _reindex(directory: Path) -> None:
    """Refresh the cached knowledge-base index of `directory` and knowledge_base/ after skills changed."""
    from omnimodel.kb.index import build_index
    from omnimodel.paths import knowledge_base_dir

    build_index([directory, knowledge_base_dir()])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
