"""Preprocessing a :class:`~anatoseg.data.case.Case` for the network.

Steps, in order (:func:`preprocess_case`):

1. crop to the body: the bounding box of the largest connected region with
   CT > -500 HU (this drops the patient table and the air around), plus a margin;
2. resample to the target spacing (images trilinear, label maps nearest);
3. CT: clip to ``ct_clip`` HU, then ``(HU - ct_mean) / ct_std``;
4. PET: clip SUV to ``suv_clip``, then ``(SUV - suv_mean) / suv_std``.

The numbers come from a dataset fingerprint (:mod:`anatoseg.data.fingerprint`)
via :meth:`Preprocessing.from_fingerprint`. Crop and resampling are recorded in
the output's affine, so a prediction maps back onto the original PET grid in
world coordinates (:meth:`PreprocessedCase.restore`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from anatoseg.data.case import Case
from anatoseg.data.resample import CT_FILL_HU, grid_for_spacing, resample_to_grid
from anatoseg.errors import ConfigError

BODY_THRESHOLD_HU = -500.0
"""CT voxels above this value count as body (air and lung lie below it)."""


def _body_component(ct: np.ndarray, threshold_hu: float, max_voxels: int) -> tuple[np.ndarray, int]:
    """Largest region above the threshold on a grid subsampled by ``step``; returns (mask, step)."""
    step = max(1, math.ceil((ct.size / max_voxels) ** (1 / 3)))
    small = np.asarray(ct[::step, ::step, ::step]) > threshold_hu
    labels, n = ndimage.label(small)
    if n == 0:
        return np.zeros_like(small), step
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes)), step


def body_bbox(ct: np.ndarray, spacing, *, margin_mm: float = 10.0, threshold_hu: float = BODY_THRESHOLD_HU,
              max_voxels: int = 4_000_000) -> tuple[slice, slice, slice]:
    """Index box ``(slice_z, slice_y, slice_x)`` around the body in ``ct`` ``(Z, Y, X)`` HU (``spacing`` likewise).

    Found on a copy subsampled to at most ``max_voxels`` (so it costs little on
    400×400×600 volumes), widened by the subsampling step and by ``margin_mm``.
    The whole grid if no voxel is above ``threshold_hu``.
    """
    component, step = _body_component(ct, threshold_hu, max_voxels)
    if not component.any():
        return tuple(slice(0, n) for n in ct.shape)
    box = []
    for axis, n in enumerate(ct.shape):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(component.any(axis=other))
        margin = int(math.ceil(margin_mm / spacing[axis]))
        pad = step - 1 + margin  # a subsampled voxel stands for up to step - 1 unseen ones around it
        box.append(slice(max(0, hits[0] * step - pad), min(n, hits[-1] * step + 1 + pad)))
    return tuple(box)


def crop_case(case: Case, box: tuple[slice, slice, slice]) -> Case:
    """The part of ``case`` inside ``box`` (views, no copy), with the affine moved accordingly."""
    shift = np.eye(4)
    shift[:3, 3] = [s.start for s in box]
    return Case(case_id=case.case_id, pet=case.pet[box], ct=case.ct[box], affine=case.affine @ shift,
                lesions=None if case.lesions is None else case.lesions[box],
                organs=None if case.organs is None else case.organs[box], meta=dict(case.meta))


def crop_to_body(case: Case, *, margin_mm: float = 10.0) -> Case:
    """``case`` cropped to the body's bounding box (see :func:`body_bbox`)."""
    return crop_case(case, body_bbox(case.ct, case.spacing, margin_mm=margin_mm))


@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing parameters (JSON-serialisable with :meth:`to_dict`).

    ``target_spacing``: mm along Z, Y, X. ``ct_clip``: (low, high) HU.
    ``ct_mean``, ``ct_std``: HU statistics of clipped body voxels.
    ``suv_clip``: (low, high) SUV. ``suv_mean``, ``suv_std``: SUV statistics of body voxels.
    ``crop_margin_mm``: margin kept around the body.
    """

    target_spacing: tuple[float, float, float]
    ct_clip: tuple[float, float]
    ct_mean: float
    ct_std: float
    suv_clip: tuple[float, float] = (0.0, 50.0)
    suv_mean: float = 1.0
    suv_std: float = 1.0
    crop_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        if len(self.target_spacing) != 3 or not all(0 < s < math.inf for s in self.target_spacing):
            raise ConfigError(f"target_spacing must be three positive numbers, got {self.target_spacing}")
        if not (0 < self.ct_std < math.inf and 0 < self.suv_std < math.inf):
            raise ConfigError("ct_std and suv_std must be positive")
        if self.ct_clip[0] >= self.ct_clip[1] or self.suv_clip[0] >= self.suv_clip[1]:
            raise ConfigError("clip ranges must be (low, high) with low < high")

    @classmethod
    def from_fingerprint(cls, fingerprint: dict, *, target_spacing=None, suv_clip=(0.0, 50.0)) -> Preprocessing:
        """Defaults from a fingerprint: median spacing, CT clipped to the 0.5/99.5 body percentiles."""
        ct, pet = fingerprint["intensity"]["ct"], fingerprint["intensity"]["pet"]
        spacing = fingerprint["median_spacing"] if target_spacing is None else target_spacing
        return cls(target_spacing=tuple(float(s) for s in spacing),
                   ct_clip=(float(ct["percentile_00_5"]), float(ct["percentile_99_5"])),
                   ct_mean=float(ct["clipped_mean"]), ct_std=float(ct["clipped_std"]),
                   suv_clip=tuple(float(v) for v in suv_clip),
                   suv_mean=float(pet["mean"]), suv_std=float(pet["std"]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        except TypeError as exc:
            raise ConfigError(f"bad preprocessing parameters: {exc}") from None


def _normalise(values: np.ndarray, clip: tuple[float, float], mean: float, std: float) -> np.ndarray:
    """In place on a float32 array: clip, subtract ``mean``, divide by ``std``."""
    np.clip(values, *clip, out=values)
    values -= np.float32(mean)
    values /= np.float32(std)
    return values


def normalise_ct(ct: np.ndarray, params: Preprocessing) -> np.ndarray:
    """HU ``(...)`` -> new float32 array ``(clip(HU) - ct_mean) / ct_std``."""
    return _normalise(np.array(ct, dtype=np.float32), params.ct_clip, params.ct_mean, params.ct_std)


def normalise_suv(pet: np.ndarray, params: Preprocessing) -> np.ndarray:
    """SUV ``(...)`` -> new float32 array ``(clip(SUV) - suv_mean) / suv_std``."""
    return _normalise(np.array(pet, dtype=np.float32), params.suv_clip, params.suv_mean, params.suv_std)


@dataclass
class PreprocessedCase:
    """Network-ready arrays of one case.

    ``image``: ``(2, Z, Y, X)`` float32, channel 0 normalised CT, channel 1 normalised PET.
    ``lesions``, ``organs``: ``(Z, Y, X)`` uint8 or None. ``affine``: ``(4, 4)`` of this grid.
    ``source_shape``, ``source_affine``: the PET grid of the :class:`Case` it came from.
    """

    case_id: str
    image: np.ndarray
    affine: np.ndarray
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    lesions: np.ndarray | None = None
    organs: np.ndarray | None = None

    def restore(self, array: np.ndarray, *, order: int = 0, fill: float = 0.0, dtype=np.uint8) -> np.ndarray:
        """Map ``array`` ``(Z, Y, X)`` on this grid back onto the source PET grid (world coordinates).

        ``order`` 0 for masks/labels, 1 for probabilities (then pass ``dtype=np.float32``).
        """
        return resample_to_grid(array, self.affine, self.source_shape, self.source_affine,
                                order=order, fill=fill, dtype=dtype)


def preprocess_case(case: Case, params: Preprocessing) -> PreprocessedCase:
    """Crop to the body, resample to ``params.target_spacing``, normalise CT and SUV (module docstring).

    Peak memory: the (lazy) cropped input plus three float32 copies of the output grid.
    """
    cropped = crop_to_body(case, margin_mm=params.crop_margin_mm)
    shape, affine = grid_for_spacing(cropped.shape, cropped.affine, params.target_spacing,
                                     path=case.meta.get("files", {}).get("pet", case.case_id))
    image = np.empty((2, *shape), dtype=np.float32)
    image[0] = resample_to_grid(cropped.ct, cropped.affine, shape, affine, order=1, fill=CT_FILL_HU)
    _normalise(image[0], params.ct_clip, params.ct_mean, params.ct_std)
    image[1] = resample_to_grid(cropped.pet, cropped.affine, shape, affine, order=1)
    _normalise(image[1], params.suv_clip, params.suv_mean, params.suv_std)

    def labels(array):
        if array is None:
            return None
        return resample_to_grid(array, cropped.affine, shape, affine, order=0, dtype=np.uint8)

    return PreprocessedCase(case_id=case.case_id, image=image, affine=affine, source_shape=case.shape,
                            source_affine=case.affine, lesions=labels(cropped.lesions),
                            organs=labels(cropped.organs))
