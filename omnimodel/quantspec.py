"""The `--quant` / `--method` text, parsed once into a QuantSpec that every consumer reads.

Accepted forms (case-insensitive):
  f32 | f16 | bf16 | q8_0             one type for every quantizable weight
  rtn:TYPE                            round-to-nearest in one GGML type (rtn:q4_k, rtn:iq4_xs, ...)
  q4_k_m | q3_k_m | q2_k | mix:RECIPE llama.cpp-style per-tensor mixes
  imatrix[:RECIPE|TYPE]               llama.cpp-style importance matrix (needs calibration)
  actquant:BPW[,key=value...]         ActQuant at a bits-per-weight budget (needs calibration)
  NAME[:ARG]                          any other installed `omnimodel.quantizers` plugin
"""

from __future__ import annotations

from dataclasses import dataclass

from omnimodel.errors import ConfigError, QuantError

FORMS = (
    "f32, f16, bf16, q8_0, rtn:TYPE, q4_k_m, q3_k_m, q2_k, mix:RECIPE, imatrix[:RECIPE|TYPE], "
    "actquant:BPW[,key=value...]"
)
UNQUANTIZED = ("f32", "f16", "bf16")
CALIBRATED = ("actquant", "imatrix")


class QuantSpecError(ConfigError, QuantError):
    """A quantization spec that cannot be parsed or names an unknown quantizer or type."""


@dataclass(frozen=True)
class QuantSpec:
    """One quantization method with its argument, e.g. rtn:q4_k or actquant:3.0,objective=amf."""

    method: str
    arg: str | None = None
    budget: float | None = None  # bits per weight (actquant)

    @staticmethod
    def parse(text: str) -> QuantSpec:
        """The spec of `text`; QuantSpecError (one line, the accepted forms) when it is not one."""
        from omnimodel.quant.plugin import available_quantizers

        raw = (text or "").strip()
        name, _, arg = raw.partition(":")
        name = name.strip().lower()
        known = available_quantizers()
        if name not in known:
            extra = sorted(set(known) - {"f32", "f16", "bf16", "q8_0", "rtn", "mix", "imatrix", "actquant", "q4_k_m", "q3_k_m", "q2_k"})
            plugins = f" (other installed plugins: {', '.join(extra)})" if extra else ""
            raise QuantSpecError(f"unknown quantizer {text!r}: use one of {FORMS}{plugins}")
        arg = arg.strip() or None
        budget = None
        if name == "actquant":
            arg, budget = _actquant_arg(text, arg)
        elif arg is not None and name in ("rtn", "imatrix", "mix"):
            arg = arg.lower()
        spec = QuantSpec(name, arg, budget)
        try:
            spec.quantizer()  # the quantizer's own checks (type names, recipes, option values)
        except QuantError as exc:
            raise QuantSpecError(f"--quant {text!r}: {str(exc).splitlines()[0]}") from None
        return spec

    def __str__(self) -> str:
        return f"{self.method}:{self.arg}" if self.arg else self.method

    @property
    def weight_class(self) -> str:
        """The parity threshold row: f32, f16, bf16 (one float type) or quant (anything quantized)."""
        return self.method if self.method in UNQUANTIZED else "quant"

    @property
    def needs_calibration(self) -> bool:
        """Whether the method reads calibration demonstrations (--calib)."""
        return self.method in CALIBRATED

    def with_budget(self, bpw: float) -> QuantSpec:
        """The same actquant spec at another bits-per-weight budget (quantize --bpw)."""
        if self.method != "actquant":
            raise QuantSpecError(f"--bpw applies to actquant only, not {self}; drop --bpw or use --method actquant")
        options = [p for p in (self.arg or "").split(",") if "=" in p]
        return QuantSpec.parse(",".join([f"actquant:{float(bpw)!r}", *options]))

    def quantizer(self):
        """A fresh quantizer plugin instance for this spec."""
        from importlib.metadata import entry_points

        from omnimodel.quant.plugin import BUILTINS, ENTRY_POINT_GROUP

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == self.method:
                return ep.load()(self.arg)
        return BUILTINS[self.method](self.arg)


def _actquant_arg(text: str, arg: str | None) -> tuple[str | None, float | None]:
    """The canonical option text of actquant (budget first, keys in snake case) and its budget."""
    if not arg:
        return None, None
    budget, options = None, []
    for part in (p.strip() for p in arg.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not eq or key == "bpw":
            try:
                budget = float(value if eq else part)
            except ValueError:
                raise QuantSpecError(f"--quant {text!r}: {part!r} is not a bits-per-weight number; write actquant:BPW[,key=value...], e.g. actquant:3.0") from None
            continue
        options.append(f"{key}={value.strip()}")
    head = [repr(budget)] if budget is not None else []
    return ",".join(head + options) or None, budget


def parse(text: str | QuantSpec) -> QuantSpec:
    """QuantSpec.parse, passing a spec through unchanged."""
    return text if isinstance(text, QuantSpec) else QuantSpec.parse(text)


__all__ = ["FORMS", "QuantSpec", "QuantSpecError", "parse"]
