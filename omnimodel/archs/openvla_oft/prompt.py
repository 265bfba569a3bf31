"""The Prismatic family's prompt (OpenVLA-OFT and OpenVLA): one template, its GGUF keys and its token ids."""

from __future__ import annotations

from typing import Any

from omnimodel.models import tokenizer as _tok

# openvla/openvla-7b's prompt; the instruction is lower-cased and the '▁' token ends the ids
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"


def prompt_metadata() -> dict[str, Any]:
    """The omnimodel.prompt.* keys omni_predict_text reads to build this prompt natively."""
    return _tok.prompt_metadata(PROMPT_TEMPLATE, lowercase=True, end_token=_tok.SPACE)


def prompt_ids(tok: Any, instruction: str) -> list[int]:
    """BOS + the prompt + the '▁' token, as the released policy builds it."""
    return _tok.build_prompt_ids(tok, instruction, PROMPT_TEMPLATE, lowercase=True, end_token=_tok.SPACE)
