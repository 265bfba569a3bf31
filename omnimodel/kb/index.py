"""The knowledge-base index: symbols of skills/, knowledge_base/ and a run's cpp/, cached by file hash, with BM25 search."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnimodel.atomic import atomic_path
from omnimodel.kb.symbols import Symbol, extract_symbols, language_of
from omnimodel.paths import REPO_ROOT, cache_dir, knowledge_base_dir, skills_dir

log = logging.getLogger(__name__)

INDEX_VERSION = 1
MAX_FILE_BYTES = 2_000_000
NAME_WEIGHT = 3
SKIP_DIRS = {".git", "__pycache__", "build", "node_modules", ".venv"}
STOPWORDS = frozenset(
    "a an the of to in on for and or is are be by with as at it this that from into".split()
)
K1, B = 1.2, 0.75
# Words a query spells out that code abbreviates in ways a prefix does not catch.
ABBREVIATIONS = {"attention": "attn", "feedforward": "ffn", "embedding": "embd", "position": "pos"}
EXPANSION_WEIGHT = 0.5


def split_identifier(word: str) -> list[str]:
    """Lower-case parts of an identifier split on _, ::, case changes and digits, plus the whole word."""
    parts = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+", word)
    out = [p.lower() for p in parts]
    whole = word.lower()
    if len(out) != 1 or out[0] != whole:
        out.append(whole)
    return out


def tokenize(text: str) -> list[str]:
    """Search tokens of free text or code: identifiers and their parts, stopwords dropped."""
    tokens: list[str] = []
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\d+", text):
        for part in split_identifier(word.strip("_")) if word.strip("_") else ():
            if part and part not in STOPWORDS:
                tokens.append(part)
    return tokens


def symbol_terms(symbol: Symbol) -> Counter[str]:
    """Weighted term counts of a symbol: name parts count NAME_WEIGHT times, then signature, doc, code."""
    terms: Counter[str] = Counter()
    for token in tokenize(symbol.name.replace("::", " ").replace(".", " ")):
        terms[token] += NAME_WEIGHT
    terms.update(tokenize(symbol.signature))
    terms.update(tokenize(symbol.doc))
    terms.update(tokenize(symbol.snippet))
    return terms


def default_roots(run_dir: Path | None = None) -> list[Path]:
    """skills/, knowledge_base/ and, when given, the run's cpp/ sources."""
    roots = [skills_dir(), knowledge_base_dir()]
    if run_dir is not None:
        roots.append(Path(run_dir) / "cpp")
    return roots


def display_path(path: Path) -> str:
    """A path relative to the repository when inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path.resolve())


def iter_source_files(roots: list[Path]) -> list[Path]:
    """Indexable files under the roots (sorted, hidden and build folders skipped)."""
    files: list[Path] = []
    for root in roots:
        if root.is_file() and language_of(root):
            files.append(root)
            continue
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if language_of(path) and not name.startswith("."):
                    files.append(path)
    return files


@dataclass
class Hit:
    """One search result: the symbol and its score."""

    symbol: Symbol
    score: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by `omnimodel kb search --json`."""
        return {**self.symbol.to_dict(), "score": round(self.score, 4)}

    def one_line(self) -> str:
        """`path:line symbol kind score`."""
        return f"{self.symbol.path}:{self.symbol.line} {self.symbol.name} {self.symbol.kind} {self.score:.2f}"


class KnowledgeBase:
    """Symbols of a set of roots plus the BM25 statistics to rank them."""

    def __init__(self, symbols: list[Symbol], roots: list[Path]) -> None:
        self.symbols = symbols
        self.roots = roots
        self._terms = [symbol_terms(s) for s in symbols]
        self._lengths = [sum(t.values()) for t in self._terms]
        self._avg = (sum(self._lengths) / len(self._lengths)) if self._lengths else 1.0
        df: Counter[str] = Counter()
        for terms in self._terms:
            df.update(terms.keys())
        n = len(symbols)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def search(self, query: str, limit: int = 10, kinds: tuple[str, ...] = ()) -> list[Hit]:
        """The best `limit` symbols for `query`: BM25 over identifier parts, exact names boosted."""
        words = [w for w in re.split(r"\s+", query.strip()) if w]
        q_terms = tokenize(query)
        if not q_terms:
            return []
        lowered = {w.lower() for w in words}
        q_weights = self.expand(q_terms)
        hits: list[Hit] = []
        for i, symbol in enumerate(self.symbols):
            if kinds and symbol.kind not in kinds:
                continue
            score = self._bm25(i, q_weights)
            short = re.split(r"::|\.", symbol.name)[-1].lower()
            if symbol.name.lower() == query.strip().lower() or short == query.strip().lower():
                score += 20.0
            elif symbol.name.lower() in lowered or short in lowered:
                score += 8.0
            if score > 0:
                hits.append(Hit(symbol, score))
        hits.sort(key=lambda h: (-h.score, h.symbol.path, h.symbol.line))
        return hits[:limit]

    def expand(self, q_terms: list[str]) -> dict[str, float]:
        """Query terms with weights: each term 1.0, plus indexed abbreviations of it ("mul" for "multiply")."""
        weights = {t: 1.0 for t in q_terms}
        for term in q_terms:
            if term in ABBREVIATIONS:
                weights.setdefault(ABBREVIATIONS[term], EXPANSION_WEIGHT)
            if len(term) < 5:
                continue
            for size in range(3, len(term)):
                prefix = term[:size]
                if prefix in self._idf:
                    weights.setdefault(prefix, EXPANSION_WEIGHT)
        return weights

    def _bm25(self, i: int, q_weights: dict[str, float]) -> float:
        terms, length = self._terms[i], self._lengths[i]
        score = 0.0
        for term, weight in q_weights.items():
            tf = terms.get(term, 0)
            if tf:
                norm = tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / self._avg))
                score += weight * self._idf.get(term, 0.0) * norm
        return score


def _cache_file(roots: list[Path]) -> Path:
    key = hashlib.sha256("\n".join(str(r.resolve()) for r in roots).encode()).hexdigest()[:16]
    return cache_dir() / "kb" / f"index-v{INDEX_VERSION}-{key}.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if data.get("version") == INDEX_VERSION else {}


def build_index(roots: list[Path] | None = None, run_dir: Path | None = None) -> KnowledgeBase:
    """Index the roots (default: skills/, knowledge_base/, the run's cpp/), re-parsing only changed files."""
    roots = [Path(r) for r in (roots if roots is not None else default_roots(run_dir))]
    cache_path = _cache_file(roots)
    cached = _read_cache(cache_path)
    files: dict[str, Any] = {}
    symbols: list[Symbol] = []
    parsed = 0
    for path in iter_source_files(roots):
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("kb: cannot read %s: %s", path, exc)
            continue
        if len(data) > MAX_FILE_BYTES:
            log.info("kb: skipping %s (%d bytes)", path, len(data))
            continue
        digest = hashlib.sha256(data).hexdigest()
        key = str(path.resolve())
        entry = cached.get(key)
        if entry is None or entry.get("sha256") != digest:
            found = extract_symbols(path, data.decode("utf-8", "replace"), display_path(path))
            entry = {"sha256": digest, "symbols": [s.to_dict() for s in found]}
            parsed += 1
        files[key] = entry
        symbols.extend(Symbol(**s) for s in entry["symbols"])
    if parsed or set(files) != set(cached):
        with atomic_path(cache_path) as tmp:
            tmp.write_text(json.dumps({"version": INDEX_VERSION, "files": files}), encoding="utf-8")
    log.info("kb: %d files (%d parsed), %d symbols", len(files), parsed, len(symbols))
    return KnowledgeBase(symbols, roots)


def search(
    query: str, limit: int = 10, run_dir: Path | None = None, roots: list[Path] | None = None
) -> list[Hit]:
    """Build (or reuse) the index and return the best hits for `query`."""
    return build_index(roots, run_dir).search(query, limit)
