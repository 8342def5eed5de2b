"""The synthetic phantom: determinism, physical values, lesions, grids and affines, cohorts on disk."""

import json

import pytest

pytest.importorskip("nibabel")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from anatoseg.data import NUM_ORGANS, ORGAN_IDS, iter_cases, load_nifti  # noqa: E402
from anatoseg.data.phantom import generate_case, generate_cohort  # noqa: E402
from anatoseg.metrics.components import components  # noqa: E402

SPACING = 8.0  # coarse, so that each case takes a fraction of a second


@pytest.fixture(scope="module")
def case():
    return generate_case([11, 0], spacing=SPACING)


@pytest.fixture(scope="module")
def clean():
    return generate_case([11, 0], spacing=SPACING, noise=False)


@pytest.fixture(scope="module")
def diagnostic():
    return generate_case([11, 0], spacing=SPACING, domain="diagnostic")


def organ_core(pc, name):
    """PET-grid voxels well inside an organ (eroded once) and away from lesions."""
    core = ndimage.binary_erosion(pc.organs == ORGAN_IDS[name])
    return core & ~ndimage.binary_dilation(pc.lesions > 0, iterations=2)


def ct_at(pc, mask):
    """CT HU (on the CT's own grid) at the CT voxels nearest to the PET voxel centres in ``mask``."""
    idx = np.argwhere(mask).T
    world = pc.pet_affine[:3, :3] @ idx + pc.pet_affine[:3, 3:4]
    ct_idx = np.rint(np.linalg.inv(pc.ct_affine)[:3, :3] @ world + np.linalg.inv(pc.ct_affine)[:3, 3:4]).astype(int)
    return pc.ct[tuple(ct_idx)].astype(float)


def test_same_seed_same_case_other_seed_other_case(case):
    again = generate_case([11, 0], spacing=SPACING)
    for name in ("pet", "ct", "ctres", "lesions", "organs", "pet_affine", "ct_affine"):
        np.testing.assert_array_equal(getattr(again, name), getattr(case, name))
    assert again.lesion_info == case.lesion_info
    other = generate_case([11, 1], spacing=SPACING)
    assert other.pet.shape != case.pet.shape or not np.array_equal(other.pet, case.pet)


def test_grids_and_affines(case):
    np.testing.assert_allclose(np.diag(case.pet_affine)[:3], [SPACING] * 3)
    np.testing.assert_allclose(np.diag(case.ct_affine)[:3], [SPACING / 2, SPACING / 2, SPACING * 0.75])
    assert case.ct.shape != case.pet.shape and not np.allclose(case.ct_affine[:3, 3], case.pet_affine[:3, 3])
    assert case.ctres.shape == case.lesions.shape == case.organs.shape == case.pet.shape
    assert case.ct.dtype == np.int16 and case.pet.dtype == np.float32
    # Through the two affines, PET-grid organ labels land on the right CT tissue.
    assert np.mean(ct_at(case, organ_core(case, "lungs")) < -500) > 0.9
    liver_ct = ct_at(case, organ_core(case, "liver"))
    assert 30 < np.median(liver_ct) < 90
    # CTres agrees with the CT it was resampled from.
    assert abs(np.mean(case.ctres[organ_core(case, "liver")]) - np.mean(liver_ct)) < 8
    # Lesions of at least two PET voxels across contain the voxel of their recorded centre, which the
    # misregistration moved with the PET (within a voxel or three of the CT-frame centre).
    inverse = np.linalg.inv(case.pet_affine)
    big = [info for info in case.lesion_info if info["diameter_mm"] >= 2 * SPACING]
    assert big
    for info in big:
        index = tuple(info["centre_zyx"][::-1])
        assert case.lesions[index] == 1, info
        ct_frame = inverse[:3, :3] @ info["centre_mm"] + inverse[:3, 3]
        assert np.abs(np.asarray(index) - ct_frame).max() <= 3, info


def test_physical_value_ranges(case):
    assert np.isfinite(case.pet).all() and case.pet.min() >= 0 and case.pet.max() < 100
    assert case.ct.min() >= -1024 and case.ct.max() <= 3071
    mean = {name: float(case.pet[organ_core(case, name)].mean())
            for name in ("brain", "liver", "lungs", "urinary_bladder")}
    assert 4 < mean["brain"] < 12 and 1.5 < mean["liver"] < 3.2 and mean["lungs"] < 1.0
    assert mean["urinary_bladder"] > mean["liver"] > mean["lungs"]
    assert -950 < np.mean(case.ctres[organ_core(case, "lungs")]) < -650
    assert np.mean(case.ctres[case.organs == ORGAN_IDS["skeleton"]]) > 100
    corner = case.ctres[0, -1, -1]  # in front of the face, above the head: air or outside the CT
    assert corner < -900
    assert set(np.unique(case.organs)) == set(range(NUM_ORGANS + 1))
    assert set(np.unique(case.lesions)) == {0, 1}


def lesion_contrast(pc):
    """(info, mean SUV in the lesion's mask component, median SUV of a 2-voxel shell around it)."""
    labels, _ = components(pc.lesions > 0)
    out = []
    for info in pc.lesion_info:
        index = tuple(info["centre_zyx"][::-1])
        if labels[index] == 0:
            continue  # a lesion smaller than a voxel marked a neighbouring voxel
        mask = labels == labels[index]
        shell = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_dilation(pc.lesions > 0)
        out.append((info, float(pc.pet[mask].mean()), float(np.median(pc.pet[shell]))))
    return out


def test_lesions_are_hotter_than_their_background(case, clean):
    assert 1 <= len(case.lesion_info) <= 10
    for info in case.lesion_info:
        assert info["suv"] > info["host_suv"]
        assert 3.0 <= info["diameter_mm"] <= 48.0  # 3-40 mm, each axis varied by up to 20 %
    measured = lesion_contrast(clean)
    assert measured
    for info, inside, around in measured:
        assert inside > around, info
    for info, inside, around in lesion_contrast(case):
        if info["hard"] is None and info["diameter_mm"] >= 2 * SPACING:
            assert inside > around, info


def test_domains_differ_in_contrast_and_noise(case, diagnostic):
    liver_petct = ct_at(case, organ_core(case, "liver"))
    liver_diag = ct_at(diagnostic, organ_core(diagnostic, "liver"))
    assert np.median(liver_diag) > np.median(liver_petct) + 20
    assert np.std(liver_diag) < np.std(liver_petct)
    np.testing.assert_array_equal(diagnostic.organs, case.organs)  # same anatomy and lesions, other CT
    np.testing.assert_array_equal(diagnostic.lesions, case.lesions)
    assert diagnostic.lesion_info == case.lesion_info


def test_cohort_on_disk_with_negatives(tmp_path):
    manifest = generate_cohort(tmp_path / "cohort", cases=2, seed=3, spacing=10.0, negatives=0.5, progress=False)
    entries = json.loads(manifest.read_text())["cases"]
    assert sorted(e["positive"] for e in entries) == [False, True]
    for entry, loaded in zip(entries, iter_cases(manifest)):
        assert loaded.case_id == entry["case"]
        assert bool(loaded.lesions.any()) == entry["positive"] == bool(entry["lesion_list"])
        ct = load_nifti(manifest.parent / entry["ct"], dtype=None)
        assert ct.data.dtype == np.int16 and ct.shape != loaded.shape
        np.testing.assert_allclose(ct.spacing, [5.0, 5.0, 7.5], atol=1e-4)
        np.testing.assert_allclose(loaded.spacing, [10.0] * 3, atol=1e-4)
    # Case i on disk is generate_case([seed, i]), written without loss.
    in_memory = generate_case([3, 1], spacing=10.0, positive=entries[1]["positive"])
    on_disk = load_nifti(manifest.parent / entries[1]["pet"])
    np.testing.assert_array_equal(on_disk.data, in_memory.pet)
    np.testing.assert_allclose(on_disk.affine, in_memory.pet_affine, atol=1e-4)
    # Its Case view is what load_case reads: (Z, Y, X), the same voxels at the same world positions.
    loaded, view = list(iter_cases(manifest))[1], in_memory.to_case()
    assert view.shape == in_memory.pet.shape[::-1] == loaded.shape
    np.testing.assert_array_equal(view.pet, loaded.pet)
    np.testing.assert_array_equal(view.organs, loaded.organs)
    np.testing.assert_allclose(view.affine, loaded.affine, atol=1e-4)
    np.testing.assert_allclose(view.affine @ [2, 3, 4, 1], in_memory.pet_affine @ [4, 3, 2, 1])
    assert not [p for p in (tmp_path / "cohort").rglob("*") if ".tmp" in p.name]
