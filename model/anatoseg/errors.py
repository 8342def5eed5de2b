"""Errors the CLI reports as one line (no traceback) with a non-zero exit."""


class AnatoError(Exception):
    """A problem with the user's input or environment, stated for the user.

    ``path`` names the offending file when there is one; the CLI prints
    ``error: <path>: <message>``.
    """

    def __init__(self, message: str, path: object | None = None):
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.path}: {message}" if self.path is not None else message


class DataError(AnatoError):
    """Bad or inconsistent image data: corrupt file, wrong grid, NaN voxels, unknown labels, ..."""


class ConfigError(AnatoError):
    """A bad configuration value, or a checkpoint that does not match the requested model."""
