"""The native policy from Python: ctypes on a run's `build/libomnimodel_policy.so`, no PyTorch at run time.

`load(run_dir).predict_action(images, proprio, instruction)` gives the same (chunk, action_dim)
un-normalised actions as the PyTorch `TorchPolicy`; tokenisation is done here with the
checkpoint's tokenizer, everything else (crop, normalisation, forward, un-normalisation) in C++.
A policy whose prompt carries the robot state (GGUF omnimodel.prompt.state, e.g. LeRobot policies that bin the state) is
always prompted inside the library (omni_predict_text), so Python, C callers and `omnimodel serve`
share one implementation of the state's normalisation, binning and tokenisation.
"""

from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path

import numpy as np

from omnimodel.errors import CheckpointError, OmniError, ToolchainError

log = logging.getLogger(__name__)

LIBRARY = "libomnimodel_policy.so"
MODEL_FILE = "model.gguf"


class NativeError(OmniError):
    """The native library reported an error (its message is the library's last error)."""


class _Params(ctypes.Structure):
    _fields_ = [
        ("n_threads", ctypes.c_int),
        ("n_gpu_layers", ctypes.c_int),
        ("flash_attn", ctypes.c_int),
        ("center_crop", ctypes.c_int),
        ("use_mmap", ctypes.c_int),
    ]


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.POINTER(ctypes.c_float)),
        ("n_dims", ctypes.c_int),
        ("shape", ctypes.c_int64 * 4),
    ]


_F32P = ctypes.POINTER(ctypes.c_float)
_I32P = ctypes.POINTER(ctypes.c_int32)
_U8P = ctypes.POINTER(ctypes.c_uint8)
BUFFER_TOO_SMALL = -7


def _bind(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise ToolchainError(f"{path}: cannot load the native library ({exc}); rebuild the run's cpp/ project") from None
    lib.omni_default_params.restype = _Params
    lib.omni_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Params)]
    lib.omni_load.restype = ctypes.c_void_p
    lib.omni_free.argtypes = [ctypes.c_void_p]
    lib.omni_last_error.restype = ctypes.c_char_p
    for fn in ("omni_n_images", "omni_image_size", "omni_proprio_dim", "omni_action_chunk", "omni_action_dim"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
        getattr(lib, fn).restype = ctypes.c_int
    lib.omni_predict.argtypes = [ctypes.c_void_p, _U8P, ctypes.c_int, _F32P, ctypes.c_int, _I32P, ctypes.c_int, _F32P]
    lib.omni_predict_raw.argtypes = [ctypes.c_void_p, _F32P, ctypes.c_int, _F32P, ctypes.c_int, _I32P, ctypes.c_int, _F32P]
    lib.omni_run_module.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(_Tensor), ctypes.c_int,
        _F32P, ctypes.c_int64, ctypes.c_int64 * 4, ctypes.POINTER(ctypes.c_int),
    ]
    lib.omni_has_module.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    if hasattr(lib, "omni_predict_text"):  # libraries generated before the tokenizer moved into C++ lack it
        lib.omni_predict_text.argtypes = [ctypes.c_void_p, _U8P, ctypes.c_int, _F32P, ctypes.c_int, ctypes.c_char_p, _F32P]
        lib.omni_prompt_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _I32P, ctypes.c_int]
    if hasattr(lib, "omni_prompt_tokens_state"):  # libraries generated before the state went into prompts lack it
        lib.omni_prompt_tokens_state.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _F32P, ctypes.c_int, _I32P, ctypes.c_int]
    if hasattr(lib, "omni_reset"):  # libraries generated before per-episode noise lack it
        lib.omni_reset.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    return lib


def _ptr(arr: np.ndarray, ctype):
    return arr.ctypes.data_as(ctypes.POINTER(ctype))


class NativePolicy:
    """A loaded native policy; call close() (or use `with`) to free its memory."""

    backend = "native"

    def __init__(
        self,
        library: str | Path,
        gguf_path: str | Path,
        tokenizer=None,
        n_threads: int = 0,
        n_gpu_layers: int = 0,
        flash_attn: int = -1,
        center_crop: bool = True,
        use_mmap: bool = True,
    ):
        self._lib = _bind(Path(library))
        self.tokenizer = tokenizer
        self.model_path = Path(gguf_path)
        self._prompt: tuple[str, bool, str] | None = None
        self._prompt_needs: tuple[bool, bool] | None = None  # (carries the state, cleans the task)
        self._bos: int | None = None
        params = _Params(n_threads, n_gpu_layers, flash_attn, int(center_crop), int(use_mmap))
        self._handle = self._lib.omni_load(str(gguf_path).encode(), ctypes.byref(params))
        if not self._handle:
            raise NativeError(f"omni_load: {self._lib.omni_last_error().decode()}")
        h = self._handle
        self.n_images = self._lib.omni_n_images(h)
        self.image_size = self._lib.omni_image_size(h)
        self.proprio_dim = self._lib.omni_proprio_dim(h)
        self.chunk = self._lib.omni_action_chunk(h)
        self.action_dim = self._lib.omni_action_dim(h)

    def reset(self, seed: int) -> None:
        """A new episode: a sampling policy's noise stream restarts from `seed` (omni_reset; TorchPolicy.reset)."""
        if not hasattr(self._lib, "omni_reset"):
            return  # a library built before omni_reset: its policy keeps one stream
        self._check(self._lib.omni_reset(self._live(), int(seed) & (2**64 - 1)), "omni_reset")

    def close(self) -> None:
        """Free the native policy."""
        if self._handle:
            self._lib.omni_free(self._handle)
            self._handle = None

    def __enter__(self) -> NativePolicy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise NativeError(f"{what}: {self._lib.omni_last_error().decode()}")

    def _live(self) -> ctypes.c_void_p:
        if not self._handle:
            raise NativeError("the native policy was closed")
        return self._handle

    def prompt_ids(self, instruction: str) -> np.ndarray:
        """BOS + the policy's prompt + the space token, as the PyTorch policy builds it."""
        if self.tokenizer is None:
            raise CheckpointError("this NativePolicy has no tokenizer; pass token ids to predict_ids instead")
        if self.prompt_carries_state():
            raise CheckpointError(
                f"{self.model_path}: the prompt carries the robot state; use native_prompt_ids(instruction, state)"
            )
        from omnimodel.models.tokenizer import build_prompt_ids

        template, lowercase, end_token = self.prompt_format()
        ids = build_prompt_ids(self.tokenizer, instruction, template, lowercase, end_token, self.bos_id())
        return np.asarray(ids, np.int32)

    def bos_id(self) -> int:
        """The GGUF tokenizer's BOS id (tokenizer.ggml.bos_token_id), LLaMA's 1 when it names none."""
        if self._bos is None:
            import gguf

            field = self._metadata().get(gguf.Keys.Tokenizer.BOS_ID)
            self._bos = int(field.contents()) if field is not None else 1
        return self._bos

    def _metadata(self) -> dict:
        from gguf import GGUFReader

        try:
            return GGUFReader(str(self.model_path)).fields
        except Exception as exc:  # noqa: BLE001 - any reader failure is one line
            raise CheckpointError(f"{self.model_path}: cannot read its metadata ({exc})") from None

    def _prompt_flags(self) -> tuple[bool, bool]:
        """(omnimodel.prompt.state, omnimodel.prompt.clean_instruction), read from the GGUF once."""
        if self._prompt_needs is None:
            from omnimodel.ggufio.constants import Keys

            fields = self._metadata()
            flags = [fields.get(k) for k in (Keys.Omnimodel.PROMPT_STATE, Keys.Omnimodel.PROMPT_CLEAN)]
            self._prompt_needs = tuple(f is not None and bool(f.contents()) for f in flags)
        return self._prompt_needs

    def prompt_carries_state(self) -> bool:
        """Whether the prompt holds the robot state (omnimodel.prompt.state): then only the library builds it."""
        return self._prompt_flags()[0]

    def _library_prompts(self) -> bool:
        """Whether predict_action leaves the prompt to the library: no tokenizer here, or a prompt
        (the state in it, openpi's task cleaning) that the Python template path does not build."""
        return self.tokenizer is None or any(self._prompt_flags())

    def prompt_format(self) -> tuple[str, bool, str]:
        """(template, lowercase, end token): the arch's prompt as the GGUF's omnimodel.prompt.* keys give it."""
        if self._prompt is None:
            from omnimodel.ggufio.constants import Keys

            fields = self._metadata()
            field = fields.get(Keys.Omnimodel.PROMPT_TEMPLATE)
            if field is None:
                raise CheckpointError(
                    f"{self.model_path}: no {Keys.Omnimodel.PROMPT_TEMPLATE} key; re-run the port to write the prompt format"
                )
            lower = fields.get(Keys.Omnimodel.PROMPT_LOWERCASE)
            end = fields.get(Keys.Omnimodel.PROMPT_END_TOKEN)
            self._prompt = (
                str(field.contents()),
                bool(lower.contents()) if lower is not None else False,
                str(end.contents()) if end is not None else "",
            )
        return self._prompt

    def predict_ids(self, images: list[np.ndarray], proprio: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        """(chunk, action_dim) un-normalised actions from uint8 HxWx3 images, raw proprio and token ids."""
        imgs = np.ascontiguousarray(np.stack([np.asarray(i) for i in images]))
        s = self.image_size
        if imgs.dtype != np.uint8 or imgs.shape[1:] != (s, s, 3):
            raise NativeError(f"images must be {s}x{s}x3 uint8 arrays, got {imgs.dtype} {imgs.shape[1:]}")
        prop = np.ascontiguousarray(proprio, np.float32).reshape(-1)
        ids = np.ascontiguousarray(token_ids, np.int32).reshape(-1)
        out = np.empty((self.chunk, self.action_dim), np.float32)
        rc = self._lib.omni_predict(
            self._live(), _ptr(imgs, ctypes.c_uint8), len(imgs), _ptr(prop, ctypes.c_float), prop.size,
            _ptr(ids, ctypes.c_int32), ids.size, _ptr(out, ctypes.c_float),
        )
        self._check(rc, "omni_predict")
        return out

    def predict_action(self, images: list[np.ndarray], proprio: np.ndarray, instruction: str) -> np.ndarray:
        """(chunk, action_dim) un-normalised actions, as TorchPolicy.predict_action.

        Tokenised here with the checkpoint's tokenizer when there is one, else inside the library;
        a prompt that carries the state or cleans the task is always built inside the library
        (omni_predict_text).
        """
        if self._library_prompts():
            return self.predict_text(images, proprio, instruction)
        return self.predict_ids(images, proprio, self.prompt_ids(instruction))

    def _text_api(self) -> ctypes.CDLL:
        if not hasattr(self._lib, "omni_predict_text"):
            raise NativeError("this native library predates omni_predict_text; rebuild the run's cpp/ project")
        return self._lib

    def native_prompt_ids(self, instruction: str, state: np.ndarray | None = None) -> np.ndarray:
        """The token ids the library itself builds for `instruction` (and the raw `state`, where the prompt carries it)."""
        lib, text, h = self._text_api(), instruction.encode(), self._live()
        if state is None:
            what = "omni_prompt_tokens"

            def call(out, capacity: int) -> int:
                return lib.omni_prompt_tokens(h, text, out, capacity)

        else:
            if not hasattr(lib, "omni_prompt_tokens_state"):
                raise NativeError("this native library predates omni_prompt_tokens_state; rebuild the run's cpp/ project")
            what, st = "omni_prompt_tokens_state", np.ascontiguousarray(state, np.float32).reshape(-1)

            def call(out, capacity: int) -> int:
                return lib.omni_prompt_tokens_state(h, text, _ptr(st, ctypes.c_float), st.size, out, capacity)

        n = call(None, 0)
        self._check(min(n, 0), what)
        ids = np.empty(n, np.int32)
        self._check(min(call(_ptr(ids, ctypes.c_int32), n), 0), what)
        return ids

    def predict_text(self, images: list[np.ndarray], proprio: np.ndarray, instruction: str) -> np.ndarray:
        """(chunk, action_dim) un-normalised actions, the prompt built and tokenised inside the library."""
        imgs = np.ascontiguousarray(np.stack([np.asarray(i) for i in images]))
        s = self.image_size
        if imgs.dtype != np.uint8 or imgs.shape[1:] != (s, s, 3):
            raise NativeError(f"images must be {s}x{s}x3 uint8 arrays, got {imgs.dtype} {imgs.shape[1:]}")
        prop = np.ascontiguousarray(proprio, np.float32).reshape(-1)
        out = np.empty((self.chunk, self.action_dim), np.float32)
        rc = self._text_api().omni_predict_text(
            self._live(), _ptr(imgs, ctypes.c_uint8), len(imgs), _ptr(prop, ctypes.c_float), prop.size,
            instruction.encode(), _ptr(out, ctypes.c_float),
        )
        self._check(rc, "omni_predict_text")
        return out

    def predict_normalized(self, pixel_values: np.ndarray, token_ids: np.ndarray, proprio_norm: np.ndarray) -> np.ndarray:
        """The forward pass alone: processor pixel_values (1, 6n, S, S) -> (chunk, dim) normalised actions."""
        px = np.ascontiguousarray(pixel_values, np.float32)
        n_images = px.size // (6 * self.image_size * self.image_size)
        prop = np.ascontiguousarray(proprio_norm, np.float32).reshape(-1)
        ids = np.ascontiguousarray(token_ids, np.int32).reshape(-1)
        out = np.empty((self.chunk, self.action_dim), np.float32)
        rc = self._lib.omni_predict_raw(
            self._live(), _ptr(px, ctypes.c_float), n_images, _ptr(prop, ctypes.c_float), prop.size,
            _ptr(ids, ctypes.c_int32), ids.size, _ptr(out, ctypes.c_float),
        )
        self._check(rc, "omni_predict_raw")
        return out

    def has_module(self, name: str) -> bool:
        """Whether run_module has a graph for this module name."""
        return bool(self._lib.omni_has_module(self._live(), name.encode()))

    def run_module(self, name: str, *inputs: np.ndarray) -> np.ndarray:
        """One module of the reference model on float32 inputs (numpy shapes as PyTorch has them)."""
        arrays = [np.ascontiguousarray(x, np.float32) for x in inputs]
        ts = (_Tensor * len(arrays))()
        for t, a in zip(ts, arrays, strict=True):
            if not 1 <= a.ndim <= 4:
                raise NativeError(f"{name}: inputs must have 1 to 4 dimensions, got {a.shape}")
            t.data = _ptr(a, ctypes.c_float)
            t.n_dims = a.ndim
            for i, d in enumerate(a.shape):
                t.shape[i] = d
        shape = (ctypes.c_int64 * 4)()
        nd = ctypes.c_int(0)
        out = np.empty(1, np.float32)
        for _ in range(2):
            rc = self._lib.omni_run_module(
                self._live(), name.encode(), ts, len(arrays), _ptr(out, ctypes.c_float), out.size, shape, ctypes.byref(nd)
            )
            if rc != BUFFER_TOO_SMALL:
                break
            out = np.empty(int(np.prod([shape[i] for i in range(nd.value)])), np.float32)
        self._check(rc, f"omni_run_module({name})")
        return out.reshape([shape[i] for i in range(nd.value)])


def _tokenizer_for(run_dir: Path, checkpoint: str | Path | None):
    from omnimodel.models.tokenizer import load_tokenizer

    if checkpoint is not None:
        return load_tokenizer(Path(checkpoint))
    if (run_dir / "tokenizer.json").exists():
        return load_tokenizer(run_dir)
    port = run_dir / "port.json"
    if port.exists():
        ckpt = json.loads(port.read_text()).get("checkpoint")
        if ckpt and (Path(ckpt) / "tokenizer.json").exists():
            return load_tokenizer(Path(ckpt))
    return None  # the library tokenises with the GGUF's own tokenizer (omni_predict_text)


def load(run_dir: str | Path, checkpoint: str | Path | None = None, **params) -> NativePolicy:
    """The native policy of a finished port: run_dir/model.gguf through run_dir/build/libomnimodel_policy.so.

    Prompts are tokenised with the checkpoint's tokenizer.json when one is found (the run's, the
    `checkpoint` given, or port.json's), else inside the library from the GGUF's tokenizer.
    """
    run_dir = Path(run_dir)
    lib = run_dir / "build" / LIBRARY
    model = run_dir / MODEL_FILE
    if not lib.exists():
        raise ToolchainError(f"{lib}: missing; finish the port (or build {run_dir / 'cpp'}) first")
    if not model.exists():
        raise CheckpointError(f"{model}: missing; finish the port first")
    return NativePolicy(lib, model, _tokenizer_for(run_dir, checkpoint), **params)
