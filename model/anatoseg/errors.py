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


class DivergedError(AnatoError):
    """Training produced a non-finite loss or gradient, or a checkpoint holds non-finite weights."""


_OS_REASONS = {
    "ENOSPC": "no space left on device",
    "EDQUOT": "disk quota exceeded",
    "EROFS": "read-only file system",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EEXIST": "already exists",
    "ENOTDIR": "a part of the path is not a folder",
    "EISDIR": "is a folder, not a file",
    "ENOENT": "no such file or folder",
    "ENAMETOOLONG": "file name too long",
    "EMFILE": "too many open files",
    "EIO": "input/output error (failing disk or network file system?)",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: ``<path>: <cause>`` (the path when the error names one)."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    reason = _OS_REASONS.get(name) or (exc.strerror or str(exc) or type(exc).__name__).lower()
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def describe_memory_error(exc: BaseException) -> str | None:
    """One line for an allocation failure (MemoryError, torch's CPU or CUDA out-of-memory), else None."""
    import re

    text = str(exc)
    if not isinstance(exc, MemoryError) and "out of memory" not in text.lower() \
            and "can't allocate memory" not in text:
        return None
    asked = re.search(r"allocate (\d+) bytes", text) or re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]iB)", text)
    size = ""
    if asked is not None:
        value = asked.group(1)
        size = f" (asked for {_bytes(int(value)) if value.isdigit() else value})"
    return (f"out of memory{size}; lower the batch or patch size (train.batch_size, data.patch_size) "
            "or use a machine with more memory")


def _bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    return f"{count} B"
