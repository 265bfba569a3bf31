"""Project exceptions: each carries a one-line message that names the problem and the fix."""


class OmniError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""

    exit_code = 2


class CheckpointError(OmniError):
    """A checkpoint directory or file is missing, truncated or inconsistent."""


class ConfigError(OmniError):
    """A configuration value is invalid (wrong sizes, unknown preset)."""


class QuantError(OmniError):
    """A tensor cannot be quantized as asked (shape, NaN/Inf, importance shape)."""


class GGUFError(OmniError):
    """A GGUF file is corrupt or does not hold what is expected."""


class ToolchainError(OmniError):
    """The compiler, cmake, GGML source or build is missing or failed."""


class SandboxError(OmniError):
    """The sandbox cannot run (Docker not running, image missing)."""


class LLMError(OmniError):
    """An LLM provider failed, a key is missing, or a replay did not match."""


class PipelineError(OmniError):
    """A port failed in one of the graph's nodes."""


class NotImplementedYet(OmniError):
    """A stage that a later issue builds."""


class CalibError(OmniError):
    """Demonstration / calibration data is missing, unreadable or not in LIBERO's HDF5 layout."""
