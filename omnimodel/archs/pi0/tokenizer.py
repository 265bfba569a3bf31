"""PaliGemma prompts: the character tokenizer presets ship, and the two prompt formats of π0 / π0.5.

PaliGemma conventions: <pad>=0, <eos>=1, <bos>=2, <unk>=3, BOS prepended, no dummy-prefix space,
prompts right-padded with id 0 to `max_token_len` with a validity mask. Released checkpoints use
the real PaliGemma SentencePiece vocabulary (257,152 ids); presets use a character vocabulary of
the preset's size so every id stays in range.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, processors

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
SPACE = "\u2581"
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")


def build_char_tokenizer(vocab_size: int) -> Tokenizer:
    """A PaliGemma-shaped character tokenizer: specials 0..3, '▁', '\\n', printable characters, fillers."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for c in [SPACE, "\n"] + [c for c in string.printable if not c.isspace()]:
        vocab.setdefault(c, len(vocab))
    if len(vocab) > vocab_size:
        raise ValueError(
            f"vocab_size {vocab_size} is smaller than the {len(vocab)} characters a prompt needs"
        )
    while len(vocab) < vocab_size:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.decoder = decoders.Replace(SPACE, " ")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS_ID)])
    tok.add_special_tokens(list(SPECIALS))
    return tok


def save_tokenizer_files(tok: Tokenizer, out_dir: Path, max_length: int) -> None:
    """tokenizer.json plus the config files `transformers.AutoTokenizer.from_pretrained(dir)` reads."""
    tok.save(str(out_dir / "tokenizer.json"))
    specials = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "add_bos_token": True,
        "add_eos_token": False,
        "padding_side": "right",
        "model_max_length": max_length,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def clean_task(task: str) -> str:
    """openpi's cleaning: strip, '_' and newlines to spaces (no lowercasing)."""
    return task.strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: np.ndarray) -> np.ndarray:
    """State in [-1, 1] -> 256 bins, ints in [-1, 255] (np.digitize over linspace(-1, 1, 257)[:-1], minus 1)."""
    return np.digitize(np.asarray(state, dtype=np.float64), bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1


def prompt_text(task: str, state_bins: np.ndarray | None = None, clean: bool = True) -> str:
    """π0 / openpi pi05_libero: 'task\\n'; π0.5 with state: 'Task: {task}, State: {bins};\\nAction: '."""
    text = clean_task(task) if clean else task
    if state_bins is None:
        return text if text.endswith("\n") else text + "\n"
    return f"Task: {text}, State: {' '.join(str(int(b)) for b in state_bins)};\nAction: "


def tokenize_prompt(tok: Tokenizer, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """BOS + ids, right-padded with 0 to max_len (truncated beyond): (ids int64, mask bool), each (max_len,)."""
    ids = tok.encode(text).ids
    if not ids or ids[0] != BOS_ID:
        ids = [BOS_ID] + ids
    ids = ids[:max_len]
    out = np.zeros(max_len, dtype=np.int64)
    out[: len(ids)] = ids
    mask = np.zeros(max_len, dtype=bool)
    mask[: len(ids)] = True
    return out, mask
