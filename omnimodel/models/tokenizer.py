"""Tokenizers: the checkpoint's own tokenizer.json, or a deterministic character tokenizer for presets."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from omnimodel.errors import CheckpointError
from omnimodel.ggufio.constants import Keys

SPACE = "\u2581"  # SentencePiece's word-start marker; LLaMA-2 id 29871


def build_char_tokenizer(vocab_size: int) -> Tokenizer:
    """A LLaMA-shaped character tokenizer: <unk>=0, <s>=1, </s>=2, '▁', printable characters, fillers.

    The top 256 ids stay free for action tokens (id = vocab_size - bin), as in LLaMA-2's vocabulary.
    """
    chars = [SPACE, "\n"] + [c for c in string.printable if not c.isspace()]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    if len(vocab) > vocab_size - 256:
        raise ValueError(f"vocab_size {vocab_size} leaves no room for 256 action tokens")
    while len(vocab) < vocab_size:
        vocab[f"<extra_{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="first", split=False)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<PAD>"])
    return tok


def save_tokenizer_files(tok: Tokenizer, out_dir: Path, pad_id: int) -> None:
    """Write tokenizer.json and the small side files a released checkpoint carries."""
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<PAD>",
                "add_bos_token": True,
                "add_eos_token": False,
                "model_max_length": 2048,
            },
            indent=2,
        )
    )
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}, indent=2)
    )
    (out_dir / "added_tokens.json").write_text(json.dumps({"<PAD>": pad_id}))


def load_tokenizer(ckpt_dir: Path) -> Tokenizer:
    """The checkpoint's tokenizer.json (released checkpoints ship one; so do ours)."""
    path = Path(ckpt_dir) / "tokenizer.json"
    if not path.exists():
        raise CheckpointError(f"{path}: tokenizer file missing; copy tokenizer.json from the released checkpoint")
    return Tokenizer.from_file(str(path))


def prompt_metadata(template: str, lowercase: bool = True, end_token: str = SPACE) -> dict[str, Any]:
    """The generic GGUF keys (omnimodel.prompt.*) from which the native omni_predict_text builds the prompt
    that build_prompt_ids builds; the template ("{instruction}" marks the slot) is the arch's."""
    return {
        Keys.Omnimodel.PROMPT_TEMPLATE: template,
        Keys.Omnimodel.PROMPT_LOWERCASE: lowercase,
        Keys.Omnimodel.PROMPT_END_TOKEN: end_token,
    }


def build_prompt_ids(
    tok: Tokenizer,
    instruction: str,
    template: str,
    lowercase: bool = True,
    end_token: str = SPACE,
    bos_id: int = 1,
) -> list[int]:
    """BOS + the arch's prompt template around the instruction, ending with `end_token` (if the vocabulary has it).

    `bos_id`: LLaMA's 1 by default; the GGUF's tokenizer.ggml.bos_token_id otherwise.
    """
    prompt = template.format(instruction=instruction.lower() if lowercase else instruction)
    ids = tok.encode(prompt).ids
    if not ids or ids[0] != bos_id:
        ids = [bos_id] + ids
    end = tok.token_to_id(end_token) if end_token else None
    if end is not None and ids[-1] != end:
        ids.append(end)
    return ids
