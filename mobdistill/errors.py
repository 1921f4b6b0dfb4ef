"""The flat error family of mobdistill. Every message states what to fix."""


class MobdistillError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""

    exit_code = 1


class UsageError(MobdistillError):
    """Bad arguments: unknown model, bad resolution, unreadable path."""

    exit_code = 2


class ExportError(MobdistillError):
    """Conversion to TFLite or ONNX failed."""


class VerifyError(MobdistillError):
    """An exported artifact does not compute what the PyTorch model computes."""


class ManifestError(MobdistillError):
    """A manifest is missing, malformed, of another schema version, or does not match its files."""


class CheckpointError(UsageError):
    """A checkpoint cannot be read or does not match the model."""


class DeviceError(MobdistillError):
    """A device cannot be reached, refused a command, or went away."""

    exit_code = 3


class EngineError(MobdistillError):
    """The on-device engine failed, crashed or timed out."""

    exit_code = 3


class UpdateError(MobdistillError):
    """A sparse-update packet was rejected."""
