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

    exit_code = 2


class MissingArtifactError(ManifestError):
    """The manifest lists no artifact of the format a command needs (e.g. no .tflite)."""


class CheckpointError(UsageError):
    """A checkpoint cannot be read or does not match the model."""


class DeviceError(MobdistillError):
    """A device cannot be reached, refused a command, or went away. `state` uses adb's words
    for `mobdistill devices`: "offline", "unauthorized", "no permissions"."""

    exit_code = 3

    def __init__(self, message: str, *, state: str = "offline") -> None:
        super().__init__(message)
        self.state = state


class EngineError(MobdistillError):
    """The on-device engine failed, crashed or timed out."""

    exit_code = 3


class UpdateError(MobdistillError):
    """A sparse-update packet was rejected. ``status`` is the C++ decoder's status name for the
    same defect ("truncated", "bad_hmac", ...; docs/wire-format.md), so both sides compare."""

    def __init__(self, message: str, status: str = "invalid_argument") -> None:
        super().__init__(message)
        self.status = status
