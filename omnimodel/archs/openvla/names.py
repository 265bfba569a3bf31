"""OpenVLA's name table: OpenVLA-OFT's trunk, tower and projector names (shared), no proprio or action head.

The checkpoint keys are the same as OFT's for the modules the two share, so the GGUF names are
OFT's (llama.cpp's `token_embd`, `blk.N.*`, `output_norm`, `output`; towers `v.*` / `v2.*`;
projector `mm.*`). OpenVLA adds the keys its de-tokeniser reads (vocabulary, bins).
"""

from __future__ import annotations

from omnimodel.archs.openvla_oft import names as oft

ARCH = "openvla"  # general.architecture, and the prefix of every key below
TOWERS = oft.TOWERS

_OFT_ONLY_KEYS = ("ACTION_CHUNK", "ACTION_HEAD_BLOCKS", "ACTION_LAYER_NORM_EPS", "LLM_PLACEHOLDER_TOKEN_ID")
KEYS: dict[str, str] = {k: v for k, v in oft.KEYS.items() if k not in _OFT_ONLY_KEYS and "PROPRIO" not in k}
KEYS.update(
    {
        "LLM_VOCAB_SIZE": "llm.vocab_size",  # padded: rows of token_embd / output
        "LLM_TEXT_VOCAB_SIZE": "llm.text_vocab_size",  # vocab_size - pad_to_multiple_of: action id = this - bin - 1
        "ACTION_N_BINS": "action.n_bins",
    }
)

_OFT_ONLY_ROLES = ("PROPRIO", "ACT")
TENSORS: dict[str, str] = {k: v for k, v in oft.TENSORS.items() if not k.startswith(_OFT_ONLY_ROLES)}
_OFT_ONLY_MODULES = ("proprio_projector", "action_head")


def _shared(module_or_key: str) -> bool:
    return module_or_key.split(".", 1)[0] not in _OFT_ONLY_MODULES


def module_prefix(module: str) -> str | None:
    """The GGUF prefix of the role a checkpoint module sits in, or None (OFT's roles, less its heads)."""
    return oft.module_prefix(module) if _shared(module) else None


def gguf_names(key: str) -> list[str]:
    """GGUF tensor name(s) of a checkpoint key; KeyError for keys OpenVLA has no role for."""
    if not _shared(key):
        raise KeyError(
            f"no GGUF name for checkpoint key {key!r} (OpenVLA has no proprio projector or action head)"
        )
    return oft.gguf_names(key)


component_of = oft.component_of
is_quantizable = oft.is_quantizable


def key(ident: str, **fill: str) -> str:
    """A metadata key of KEYS without the arch prefix, placeholders filled."""
    return KEYS[ident].format(**fill)


def tensor(ident: str, **fill) -> str:
    """A tensor name of TENSORS, placeholders filled."""
    return TENSORS[ident].format(**fill)


def slots() -> tuple:
    """OFT's slots for the modules OpenVLA shares (towers, projector, LLaMA layers)."""
    return tuple(s for s in oft.SLOTS if s.skill not in ("proprio_projector", "mlp_resnet_action_head"))
