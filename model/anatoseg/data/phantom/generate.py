"""One synthetic whole-body PET/CT case, in memory: :func:`generate_case`.

The anatomy is painted once on a fine grid (the CT spacing) that covers both
fields of view; the CT is that grid's CT block, the PET is the blurred activity
sampled at the PET voxel centres. PET and CT therefore have different spacings,
shapes and origins (sub-voxel offsets included) and are related only through
their affines, like real PET/CT. The PET is misregistered against the CT
(:mod:`.misregister`); the lesion mask follows the PET, the organ map the CT.
Lesion masks are computed on the PET grid from the analytic lesion shapes
(voxels at least half inside; a lesion smaller than a voxel still marks the
voxel it covers most). Lesion and uptake-source records: :mod:`.records`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from anatoseg.data.case import Case
from anatoseg.data.nifti import file_to_zyx
from anatoseg.data.phantom.anatomy import build_anatomy, paint_anatomy
from anatoseg.data.phantom.body import Anatomy
from anatoseg.data.phantom.ct import synthesize_ct
from anatoseg.data.phantom.grid import Grid
from anatoseg.data.phantom.lesions import Lesion, place_lesions
from anatoseg.data.phantom.misregister import draw_misregistration
from anatoseg.data.phantom.pet import synthesize_pet
from anatoseg.data.phantom.records import lesion_records, source_records
from anatoseg.data.phantom.shapes import fraction
from anatoseg.data.phantom.tissues import DOMAINS, hu_table, suv_table
from anatoseg.data.resample import resample_ct_to_pet, resample_to_grid

DEFAULT_SPACING = (4.0, 4.0, 4.0)
STEPS = ("anatomy", "lesions", "ct", "pet", "labels")
"""Names passed to ``on_step`` as generation proceeds (for progress bars)."""

_CT_HALF_FOV_X = 250.0  # 500 mm CT display field of view; wide patients' arms are cut, as on real scanners


@dataclass
class PhantomCase:
    """A generated case, in the phantom's own ``(X, Y, Z)`` order (as the files are written;
    :meth:`to_case` gives the ``(Z, Y, X)`` :class:`~anatoseg.data.case.Case`).

    ``pet``: ``(X, Y, Z)`` float32 SUV on the PET grid ``pet_affine`` (RAS+, mm).
    ``ct``: ``(Xc, Yc, Zc)`` int16 HU on its own grid ``ct_affine``.
    ``ctres``: ``(X, Y, Z)`` float32 HU, the CT resampled onto the PET grid (fill -1024).
    ``lesions``: ``(X, Y, Z)`` uint8 {0, 1}; ``organs``: ``(X, Y, Z)`` uint8 organ ids (PET grid).
    ``lesion_info``: one dict per lesion (site, centre_mm, centre_zyx, diameter_mm, volume_ml, suv,
    host_suv, contrast, relation, touches, hard; :mod:`.records`).
    ``uptake_sources``: one dict per non-lesion uptake source (kind, organ, centre_zyx, suv).
    ``params``: the case's random parameters (domain, body proportions, noise, misregistration, ...).
    """

    case_id: str
    pet: np.ndarray
    pet_affine: np.ndarray
    ct: np.ndarray
    ct_affine: np.ndarray
    ctres: np.ndarray
    lesions: np.ndarray
    organs: np.ndarray
    lesion_info: list[dict] = field(default_factory=list)
    uptake_sources: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def to_case(self) -> Case:
        """The :class:`~anatoseg.data.case.Case` view (PET grid, CT = CTres), ``(Z, Y, X)`` as
        :func:`~anatoseg.data.case.load_case` reads the written files."""
        pet, affine = file_to_zyx(self.pet, self.pet_affine)
        ct, lesions, organs = (file_to_zyx(a, self.pet_affine)[0] for a in (self.ctres, self.lesions, self.organs))
        return Case(case_id=self.case_id, pet=pet, ct=ct, affine=affine, lesions=lesions, organs=organs,
                    meta={"phantom": self.params, "lesions": self.lesion_info,
                          "uptake_sources": self.uptake_sources})


def _triple(value) -> tuple[float, float, float]:
    values = (float(value),) * 3 if np.isscalar(value) else tuple(float(v) for v in value)
    if len(values) != 3 or min(values) <= 0:
        raise ValueError(f"spacing must be one or three positive numbers, got {value!r}")
    return values


def _grids(bounds, pet_spacing, ct_spacing, rng) -> tuple[Grid, Grid, Grid, tuple[slice, slice, slice]]:
    """(PET grid, CT grid, fine grid covering both at CT spacing, CT block inside the fine grid)."""
    lo, hi = bounds
    pet_lo = np.array([lo[0] - 5.0, -30.0, 0.0]) + rng.uniform(-0.5, 0.5, 3) * pet_spacing
    pet_hi = np.array([hi[0] + 5.0, hi[1] + 10.0, hi[2] + 10.0])
    ct_lo = np.array([-_CT_HALF_FOV_X, -45.0, -15.0]) + rng.uniform(-0.5, 0.5, 3) * ct_spacing
    ct_hi = np.array([_CT_HALF_FOV_X, hi[1] + 25.0, hi[2] + 25.0])
    pet = Grid.covering(pet_lo, pet_hi, pet_spacing)
    ct = Grid.covering(ct_lo, ct_hi, ct_spacing)
    sp = np.asarray(ct_spacing)
    before = np.maximum(0, np.ceil((ct_lo - pet_lo) / sp)).astype(int)
    pet_top = np.asarray(pet.origin) + (np.asarray(pet.shape) - 1) * np.asarray(pet.spacing)
    ct_top = np.asarray(ct.origin) + (np.asarray(ct.shape) - 1) * sp
    after = np.maximum(0, np.ceil((pet_top - ct_top) / sp)).astype(int)
    fine = Grid(tuple(int(n) for n in np.asarray(ct.shape) + before + after), ct.spacing,
                tuple(float(v) for v in np.asarray(ct.origin) - before * sp))
    block = tuple(slice(int(b), int(b) + n) for b, n in zip(before, ct.shape))
    return pet, ct, fine, block


def _pieces(lesions: Sequence[Lesion], grid: Grid, core: bool = False) -> list:
    out = []
    for lesion in lesions:
        shape = lesion.core if core else lesion.shape
        if shape is not None and (found := fraction(grid, shape)) is not None:
            out.append((lesion, *found))
    return out


def _lesion_mask(lesions: Sequence[Lesion], grid: Grid) -> np.ndarray:
    mask = np.zeros(grid.shape, dtype=np.uint8)
    for _, slices, f in _pieces(lesions, grid):
        block = mask[slices]
        block[f >= 0.5] = 1
        if not (f >= 0.5).any() and f.max() > 0:
            block[np.unravel_index(int(np.argmax(f)), f.shape)] = 1
    return mask


def _anatomy_params(anatomy: Anatomy) -> dict:
    """Body proportions and the tissues in their active state (``active_uptake``), JSON-ready."""
    return {**{k: round(float(v), 3) for k, v in anatomy.landmarks["body"].items()},
            "active_uptake": sorted(t.name.lower() for t in anatomy.active)}


def generate_case(seed: int | Sequence[int] | np.random.SeedSequence, *, spacing=DEFAULT_SPACING,
                  ct_spacing=None, domain: str = "petct", positive: bool = True, noise: bool = True,
                  misregistration: float = 1.0, case_id: str | None = None,
                  on_step: Callable[[str], None] | None = None) -> PhantomCase:
    """Generate one case; the same arguments always give the same arrays.

    The anatomy depends only on ``seed``; the two domains of one seed share
    anatomy and lesions (only the CT differs), and so do a positive and a negative
    case (``positive``) except for the lesions. Lesion positions are drawn from
    voxels of the fine grid, so they move slightly with ``spacing``.

    ``seed``: anything ``np.random.default_rng`` accepts (e.g. ``[cohort_seed, index]``).
    ``spacing``: PET voxel size in mm (one number or three, X Y Z); ``ct_spacing``
    defaults to half of it in-plane and 3/4 of it along z. ``domain``:
    ``"petct"`` (low-dose, unenhanced) or ``"diagnostic"`` (contrast-enhanced,
    sharper, less noise). ``positive``: place lesions (at least one) or none.
    ``noise``: add PET and CT noise (off gives the noise-free images).
    ``misregistration``: scale of the PET–CT misregistration (1 realistic, 0 none;
    :mod:`.misregister`). ``on_step(name)`` is called after each of :data:`STEPS`.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    pet_spacing = np.asarray(_triple(spacing))
    ct_spacing = np.asarray(_triple(ct_spacing) if ct_spacing is not None else pet_spacing * [0.5, 0.5, 0.75])
    step = on_step or (lambda name: None)
    rng = np.random.default_rng(seed)

    anatomy = build_anatomy(rng)
    pet_grid, ct_grid, fine, ct_block = _grids(anatomy.bounds, pet_spacing, ct_spacing, rng)
    tissue, organs_fine = paint_anatomy(anatomy, fine)
    suv_by_tissue, hu_by_tissue = suv_table(rng, anatomy.active), hu_table(domain, rng)
    moved = draw_misregistration(rng, anatomy.landmarks, misregistration)
    step("anatomy")

    lesions = (place_lesions(rng, anatomy, fine, tissue, organs_fine, suv_by_tissue, hu_by_tissue, domain)
               if positive else [])
    step("lesions")

    ct_pieces = _pieces(lesions, ct_grid)
    ct = synthesize_ct(tissue[ct_block], hu_by_tissue, ct_pieces, domain, ct_grid.spacing, rng, noise=noise)
    step("ct")

    fine_pieces = _pieces(lesions, fine)
    pet, pet_params = synthesize_pet(tissue, suv_by_tissue, fine_pieces, _pieces(lesions, fine, core=True),
                                     fine, pet_grid, rng, moved, noise=noise)
    del tissue
    step("pet")

    organs = resample_to_grid(organs_fine, fine.affine, pet_grid.shape, pet_grid.affine, order=0, dtype=np.uint8)
    ctres = resample_ct_to_pet(ct, ct_grid.affine, pet_grid.shape, pet_grid.affine)
    mask = moved.warp(_lesion_mask(lesions, moved.source_grid(pet_grid)), pet_grid, nearest=True)
    records = lesion_records(fine_pieces, organs_fine, fine, pet_grid, mask, moved)
    step("labels")

    params = {"domain": domain, "positive": bool(positive), "noise": bool(noise), "pet_spacing_mm": pet_grid.spacing,
              "ct_spacing_mm": ct_grid.spacing, **_anatomy_params(anatomy), **pet_params,
              "misregistration": {"scale": float(misregistration), **moved.params()}}
    return PhantomCase(case_id=case_id or "phantom", pet=pet, pet_affine=pet_grid.affine, ct=ct,
                       ct_affine=ct_grid.affine, ctres=ctres, lesions=mask, organs=organs, lesion_info=records,
                       uptake_sources=source_records(anatomy, suv_by_tissue, pet_grid, moved), params=params)
