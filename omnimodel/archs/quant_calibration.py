"""What a calibration-driven quantizer (ActQuant) asks an architecture, and nothing else.

An arch answers `Arch.quant_calibration()` with one `QuantCalibration`: how demonstrations become
calibration samples in the form its model consumes, the training loss split into its action term
and its auxiliary term (Action-Mixed Fisher), the model output the HSIC action statistic is
measured against, where each tower's input hidden state X is found (hook paths inside the arch's
own module tree), which tower a GGUF matrix is compared with, and which GGUF tensors the action
never depends on. The quantizer holds no module path and no loss of any arch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HSIC_TARGETS = ("truth", "output")


class QuantCalibration(ABC):
    """One arch's calibration hooks; `calib` below is the arch's own calibration-set object (len() = frames)."""

    # what HSIC(Y_l, A) compares with: the ground-truth action chunks of the calibration set
    # ("truth"), or the model's own action output of the capture forward ("output")
    hsic_target: str = "truth"
    loss_name: str = ""  # one line for the report: what the action term and the auxiliary term are

    def __init__(self, arch: Any):
        self.arch = arch

    # ---- calibration samples
    @abstractmethod
    def calibration_set(self, root: str | Path, cfg: Any, ckpt: Path | None = None, stats: dict | None = None,
                        frames: int | None = None, seed: int = 0, tokenizer: Any = None) -> Any:  # fmt: skip
        """The calibration set from LIBERO-style demonstrations under `root` for a model of config `cfg`,
        tokenised and normalised as the checkpoint `ckpt` does it (without one: `stats` and `tokenizer`,
        or the arch's defaults); `frames` subsamples (None: every frame)."""

    @abstractmethod
    def subset(self, calib: Any, idx: np.ndarray) -> Any:
        """The frames `idx` of a calibration set."""

    def resolve(self, calibration: Any, cfg: Any, frames: int | None, seed: int, extra: dict) -> Any:
        """A calibration set from what the converter was given: a set (subsampled to `frames`), a
        demonstrations path, or None (CalibError)."""
        from omnimodel.errors import CalibError

        if calibration is None:
            raise CalibError(
                "actquant needs calibration data: pass --calib DIR (from `omnimodel suite export --out DIR`)"
            )
        if isinstance(calibration, (str, Path)):
            return self.calibration_set(calibration, cfg, extra.get("checkpoint"), extra.get("stats"), frames, seed,
                                        extra.get("tokenizer"))  # fmt: skip
        if not hasattr(calibration, "__len__"):
            raise CalibError(
                f"actquant cannot use calibration data of type {type(calibration).__name__}; pass a directory"
            )
        if frames is not None and frames < len(calibration):
            idx = np.sort(np.random.default_rng(seed).choice(len(calibration), frames, replace=False))
            return self.subset(calibration, idx)
        return calibration

    def batches(self, calib: Any, batch: int) -> Iterator[list[int]]:
        """Frame indices `batch` at a time that one loss call can take together."""
        for s in range(0, len(calib), batch):
            yield list(range(s, min(s + batch, len(calib))))

    def truth(self, calib: Any) -> np.ndarray:
        """(N, D) ground-truth action chunks, flattened, in model units."""
        return np.asarray(calib.actions).reshape(len(calib), -1)

    # ---- the model
    @abstractmethod
    def loss(self, model: Any, calib: Any, idx: list[int], device: Any, dtype: Any, with_aux: bool,
             reduction: str = "mean") -> tuple[Any, Any]:  # fmt: skip
        """(action term, auxiliary term or None) of the training loss on frames `idx` (differentiable).

        `with_aux` False: the auxiliary term is not needed (None may come back). `reduction`: "mean"
        over every action entry, or "sum" over a frame's entries then the mean over frames.
        """

    @abstractmethod
    def action_output(self, model: Any, calib: Any, i: int, device: Any, dtype: Any) -> Any:
        """One forward of frame i (the capture hooks see it); (1, D) the action output HSIC uses when
        `hsic_target` is "output"."""

    def has_aux_head(self, model: Any) -> bool:
        """Whether the model has the auxiliary (action-token) pathway; without one lambda is 1."""
        return False

    def token_table(self, model: Any) -> Any:
        """The LLM's token-embedding parameter (the GGUF `token_embd.weight`), or None."""
        return None

    def tower_inputs(self) -> dict[str, str]:
        """Tower label -> path of the module whose first input is that tower's hidden state X."""
        return self.arch.tower_inputs()

    def tower_of(self, gguf_name: str, component: str) -> str:
        """The tower label whose X a GGUF matrix is compared with (a key of `tower_inputs`)."""
        return gguf_name.split(".", 1)[0] if component == "vision" else "llm"

    def dead_tensors(self, names: Iterable[str], cfg: Any) -> set[str]:
        """The GGUF tensors among `names` that no action depends on: out of the budget, the cheapest type."""
        return set()

    def describe(self) -> dict:
        """What the report records about the calibration hooks."""
        return {"hsic_target": self.hsic_target, "loss": self.loss_name}
