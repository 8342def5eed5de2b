"""The one axis order of anatoseg's arrays, and the two conversions at its edges.

Past the NIfTI loader every array is ``(Z, Y, X)``, and so is every per-axis
value: patch sizes, spacings, shapes, in configs, checkpoints and logs. A NIfTI
file stores ``(I, J, K)`` = ``(X, Y, Z)`` voxels (RAS after reorientation); the
conversion happens once where volumes are read (:func:`anatoseg.data.nifti.file_to_zyx`)
and once where they are written (:func:`anatoseg.data.nifti.zyx_to_file`), with
:func:`xyz_to_zyx` / :func:`zyx_to_xyz`. Checkpoints, stored configs and
fingerprints record :data:`AXES` and are refused without it (:func:`check_axes`).
"""

from __future__ import annotations

import numpy as np

from anatoseg.errors import ConfigError

AXES = "zyx"
"""The axis order of every array, size and spacing, as recorded in checkpoints, configs and fingerprints."""


def _reverse(array: np.ndarray, affine: np.ndarray | None):
    reversed_array = np.transpose(array, (2, 1, 0)) if array is not None else None  # memory maps stay lazy
    if affine is None:
        return reversed_array
    # Voxel (k, j, i) of the result is voxel (i, j, k) of the input: swap the affine's first and third columns.
    return reversed_array, np.asarray(affine, dtype=np.float64)[:, [2, 1, 0, 3]]


def xyz_to_zyx(array: np.ndarray, affine: np.ndarray | None = None):
    """``(X, Y, Z)`` -> ``(Z, Y, X)`` (a view); with ``affine``, returns ``(view, affine)`` mapping the
    new indices to the same world positions."""
    return _reverse(array, affine)


def zyx_to_xyz(array: np.ndarray, affine: np.ndarray | None = None):
    """``(Z, Y, X)`` -> ``(X, Y, Z)`` (a view); with ``affine``, returns ``(view, affine)`` as
    :func:`xyz_to_zyx`."""
    return _reverse(array, affine)


def check_axes(recorded: object, what: str, path: object | None = None) -> None:
    """ConfigError unless ``recorded`` is :data:`AXES` (``None``: written before axes were recorded)."""
    if recorded == AXES:
        return
    if recorded is None:
        raise ConfigError(f"{what} does not record its axis order ('axes': '{AXES}'): it was written by an "
                          f"older anatoseg whose sizes and spacings may be (X, Y, Z); this version reads "
                          f"(Z, Y, X) only. Recreate it with this version", path)
    raise ConfigError(f"{what} has axes {recorded!r}; this anatoseg reads '{AXES}' (Z, Y, X) only", path)
