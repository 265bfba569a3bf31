"""A checkpoint's tokenizer as llama.cpp's `tokenizer.ggml.*` metadata (a SentencePiece "llama" vocab).

The keys and values are those llama.cpp's convert_hf_to_gguf.py writes for a SentencePiece model
(`_set_vocab_sentencepiece`): model "llama", pre "default", the token list, float32 scores,
int32 token types, then gguf-py's SpecialVocab (bos/eos/unk/pad ids, add_bos/add_eos). Sources,
in order: `tokenizer.model` (SentencePiece, as LLaMA-2-based checkpoints ship it) or a `tokenizer.json`
whose model is BPE behind a Metaspace ('▁') pre-tokenizer or a LLaMA-style Replace/Prepend
normalizer (SentencePiece exported to HF, and our tiny character tokenizer). For the latter a
token's score is minus the rank of the merge that makes it (0 for tokens no merge makes), which is
SentencePiece BPE's order; the native library then tokenises with llama.cpp's own SPM code.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import gguf

from omnimodel.errors import CheckpointError

log = logging.getLogger(__name__)

K = gguf.Keys.Tokenizer
T = gguf.TokenType
SPACE = "\u2581"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_ADDED_SCORE = -1000.0  # what convert_hf_to_gguf.py gives added and user-defined tokens


def has_tokenizer(ckpt_dir: Path) -> bool:
    """Whether the directory holds a tokenizer this module can express."""
    return any((Path(ckpt_dir) / f).is_file() for f in TOKENIZER_FILES)


def tokenizer_metadata(ckpt_dir: Path) -> dict[str, Any]:
    """`tokenizer.ggml.*` key -> value for the checkpoint's tokenizer ({} when it ships none)."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / "tokenizer.model").is_file():
        tokens, scores, types = _sentencepiece_vocab(ckpt_dir)
        add_prefix = True
    elif (ckpt_dir / "tokenizer.json").is_file():
        tokens, scores, types, add_prefix = _hf_spm_vocab(ckpt_dir / "tokenizer.json")
    else:
        return {}
    meta: dict[str, Any] = {
        K.MODEL: "llama",
        K.PRE: "default",
        K.LIST: tokens,
        K.SCORES: [float(s) for s in scores],
        K.TOKEN_TYPE: [int(t) for t in types],
    }
    if not add_prefix:
        meta[K.ADD_PREFIX] = False
    meta.update(_special_tokens(ckpt_dir, tokens))
    return meta


def pad_to(meta: dict[str, Any], n_rows: int) -> dict[str, Any]:
    """The token arrays padded to the embedding's rows with UNUSED "[PAD<id>]" tokens, as llama.cpp's converter pads."""
    tokens = meta.get(K.LIST, [])
    if not isinstance(tokens, list) or not tokens or len(tokens) >= n_rows:
        return meta
    out = dict(meta)
    out[K.LIST], out[K.SCORES], out[K.TOKEN_TYPE] = (
        list(tokens),
        list(meta[K.SCORES]),
        list(meta[K.TOKEN_TYPE]),
    )
    _pad(out[K.LIST], out[K.SCORES], out[K.TOKEN_TYPE], n_rows)
    return out


def _pad(tokens: list, scores: list, types: list, n: int) -> None:
    """Grow the arrays to `n` with UNUSED "[PAD<id>]" tokens (the id keeps each text unique)."""
    for i in range(len(tokens), n):
        tokens.append(f"[PAD{i}]")
        scores.append(_ADDED_SCORE)
        types.append(int(T.UNUSED))


def _special_tokens(ckpt_dir: Path, tokens: list[str]) -> dict[str, Any]:
    """gguf-py's SpecialVocab (tokenizer.json's added tokens, tokenizer_config.json) as keys.

    A special token SpecialVocab finds no id for (its text is a base-vocabulary piece, not an
    added token) gets the id of that text in the token list.
    """
    quiet = logging.getLogger("gguf.vocab")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns about tokenizer.json's pair template, which a policy never uses
    try:
        special = gguf.SpecialVocab(ckpt_dir, load_merges=False, n_vocab=len(tokens))
    finally:
        quiet.setLevel(level)
    out: dict[str, Any] = {}
    id_keys = {
        "bos": K.BOS_ID,
        "eos": K.EOS_ID,
        "unk": K.UNK_ID,
        "sep": K.SEP_ID,
        "pad": K.PAD_ID,
        "mask": K.MASK_ID,
    }
    ids = dict(special.special_token_ids)
    texts = _config_specials(ckpt_dir)
    for typ in ("bos", "eos", "unk", "pad"):
        text = texts.get(typ)
        if typ not in ids and text in tokens:
            ids[typ] = tokens.index(text)
    for typ, tid in ids.items():
        if typ in id_keys:
            out[id_keys[typ]] = int(tid)
    add_keys = {"bos": K.ADD_BOS, "eos": K.ADD_EOS, "sep": K.ADD_SEP}
    for typ, value in special.add_special_token.items():
        if typ in add_keys:
            out[add_keys[typ]] = bool(value)
    return out


def _sentencepiece_vocab(ckpt_dir: Path) -> tuple[list[str], list[float], list[int]]:
    """convert_hf_to_gguf.py's _create_vocab_sentencepiece: pieces, scores, types, then added tokens."""
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise CheckpointError(
            f"{ckpt_dir / 'tokenizer.model'}: reading a SentencePiece model needs the sentencepiece package "
            "(pip install sentencepiece)"
        ) from None
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(ckpt_dir / "tokenizer.model"))
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        kind = T.NORMAL
        if sp.IsUnknown(i):
            kind = T.UNKNOWN
        elif sp.IsControl(i):
            kind = T.CONTROL
        elif sp.IsUnused(i):
            kind = T.UNUSED
        elif sp.IsByte(i):
            kind = T.BYTE
        tokens.append(sp.IdToPiece(i))
        scores.append(sp.GetScore(i))
        types.append(kind)
    added = ckpt_dir / "added_tokens.json"
    if added.is_file():
        for text, tid in sorted(json.loads(added.read_text()).items(), key=lambda kv: kv[1]):
            if not isinstance(tid, int) or not 0 <= tid <= 1 << 22:
                raise CheckpointError(f"{added}: token {text!r} has id {tid!r}, not a vocabulary id")
            _pad(
                tokens, scores, types, tid + 1
            )  # ids past the model's pieces: "[PAD<id>]" up to it, as the converter does
            tokens[tid], scores[tid], types[tid] = text, _ADDED_SCORE, T.USER_DEFINED
    _mark_special_added(ckpt_dir, tokens, types)
    return tokens, scores, types


def _mark_special_added(ckpt_dir: Path, tokens: list[str], types: list[int]) -> None:
    """Added tokens tokenizer_config.json calls special are CONTROL, as the converter marks them."""
    cfg = ckpt_dir / "tokenizer_config.json"
    if not cfg.is_file():
        return
    for tid, data in json.loads(cfg.read_text()).get("added_tokens_decoder", {}).items():
        tid = int(tid)
        if 0 <= tid < len(tokens) and data.get("special"):
            tokens[tid], types[tid] = data["content"], T.CONTROL


def _hf_spm_vocab(path: Path) -> tuple[list[str], list[float], list[int], bool]:
    """A SentencePiece-shaped tokenizer.json (BPE + '▁' word marker) as pieces, scores, types, add_space_prefix."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    model = doc.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise CheckpointError(
            f"{path}: model type {model.get('type')!r} is not a SentencePiece-style BPE; ship the checkpoint's tokenizer.model"
        )
    add_prefix = _spm_space_prefix(doc, path)
    vocab: dict[str, int] = model["vocab"]
    added = {int(a["id"]): a for a in doc.get("added_tokens") or []}
    n = max([*vocab.values(), *added.keys()]) + 1
    by_id: dict[int, str] = {i: t for t, i in vocab.items()}
    for tid, a in added.items():
        by_id[tid] = a["content"]
    missing = [i for i in range(n) if i not in by_id]
    if missing:
        raise CheckpointError(f"{path}: token ids are not contiguous (id {missing[0]} has no token)")
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        ranks.setdefault(left + right, rank)
    unk = model.get("unk_token")
    specials = set(_config_specials(path.parent).values()) | {
        a["content"] for a in added.values() if a.get("special")
    }
    tokens, scores, types = [], [], []
    for i in range(n):
        text = by_id[i]
        if i in added:
            kind = T.CONTROL if added[i].get("special") else T.USER_DEFINED
            score = _ADDED_SCORE
        else:
            score = -float(ranks[text]) if text in ranks else 0.0
            kind = T.NORMAL
            if text == unk:
                kind = T.UNKNOWN
            elif text in specials:
                kind = T.CONTROL
            elif _BYTE_TOKEN.fullmatch(text):
                kind = T.BYTE
        tokens.append(text)
        scores.append(score)
        types.append(kind)
    return tokens, scores, types, add_prefix


def _config_specials(ckpt_dir: Path) -> dict[str, str]:
    """ "bos"/"eos"/"unk"/"pad" -> token text, from tokenizer_config.json or special_tokens_map.json."""
    out: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = ckpt_dir / name
        if not f.is_file():
            continue
        doc = json.loads(f.read_text())
        for typ in ("bos", "eos", "unk", "pad"):
            v = doc.get(f"{typ}_token")
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str):
                out[typ] = v
    return out


def _spm_space_prefix(doc: dict, path: Path) -> bool:
    """Whether the tokenizer marks words with '▁' as SentencePiece does, and prefixes the text with one."""
    pre = doc.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "Metaspace" and step.get("replacement", SPACE) == SPACE:
            return (
                step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never")
                != "never"
            )
    norm = doc.get("normalizer") or {}
    parts = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    replaces = any(p.get("type") == "Replace" and p.get("content") == SPACE for p in parts)
    if replaces:
        return any(p.get("type") == "Prepend" and p.get("prepend") == SPACE for p in parts)
    raise CheckpointError(
        f"{path}: not a SentencePiece-style tokenizer (no Metaspace pre-tokenizer or '▁' normalizer); "
        "ship the checkpoint's tokenizer.model"
    )
