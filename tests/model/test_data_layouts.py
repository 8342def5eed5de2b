"""Readers for the autoPET, nnU-Net raw and manifest layouts, CT onto the PET grid, streaming."""

import json

import pytest

pytest.importorskip("nibabel")

import numpy as np  # noqa: E402

from anatoseg.data import detect_layout, find_cases, iter_cases, load_case, save_nifti  # noqa: E402
from anatoseg.data.resample import CT_FILL_HU  # noqa: E402
from anatoseg.errors import DataError  # noqa: E402

PET_SHAPE = (10, 12, 14)
PET_AFFINE = np.array([[-4.0, 0, 0, 20.0], [0, -4.0, 0, 30.0], [0, 0, 4.0, -20.0], [0, 0, 0, 1]])  # LPS-like
CT_SHAPE = (26, 30, 16)  # ends at z = 20 mm, below the top of the PET (32 mm)
CT_AFFINE = np.array([[2.0, 0, 0, -24.0], [0, 2.0, 0, -20.0], [0, 0, 3.0, -25.0], [0, 0, 0, 1]])


def world(shape, affine):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape)


def ct_value(points):
    """CT as a linear function of world position, so trilinear resampling reproduces it exactly."""
    return 2.0 * points[0] - points[1] + 0.5 * points[2]


def write_case(folder, *, ct=True, ctres=False, seg=True, organs=False, pet_name="SUV", suffix=".nii.gz"):
    folder.mkdir(parents=True, exist_ok=True)
    pet = np.zeros(PET_SHAPE, np.float32)
    pet[2, 3, 4] = 9.0  # one hot voxel, also the lesion
    save_nifti(folder / f"{pet_name}{suffix}", pet, PET_AFFINE)
    if ct:
        save_nifti(folder / f"CT{suffix}", ct_value(world(CT_SHAPE, CT_AFFINE)), CT_AFFINE, dtype=np.float32)
    if ctres:
        save_nifti(folder / f"CTres{suffix}", ct_value(world(PET_SHAPE, PET_AFFINE)), PET_AFFINE, dtype=np.float32)
    if seg:
        mask = np.zeros(PET_SHAPE, np.uint8)
        mask[2, 3, 4] = 1
        save_nifti(folder / f"SEG{suffix}", mask, PET_AFFINE)
    if organs:
        labels = np.zeros(PET_SHAPE, np.uint8)
        labels[5:, :, :] = 4
        save_nifti(folder / f"ORGANS{suffix}", labels, PET_AFFINE)
    return folder


def check_case(case, *, ct_covers_all=False):
    assert case.shape == PET_SHAPE[::-1]  # (Z, Y, X)
    # Reoriented to RAS, then reversed: index axes 0, 1, 2 run towards S, A, R.
    assert np.all(np.diag(case.affine[:3, 2::-1]) > 0) and np.count_nonzero(case.affine[:3, :3]) == 3
    points = world(case.shape, case.affine)
    # The hot PET voxel and the lesion voxel are still at the same world position.
    hot = np.argwhere(case.pet == 9.0)[0]
    np.testing.assert_allclose(case.affine @ [*hot, 1], PET_AFFINE @ [2, 3, 4, 1])
    assert case.lesions is not None and tuple(np.argwhere(case.lesions)[0]) == tuple(hot)
    # CT values on the PET grid are the analytic CT at the PET voxel centres (or the fill outside the CT).
    expected = ct_value(points)
    ct_idx = np.linalg.inv(CT_AFFINE) @ np.concatenate([points.reshape(3, -1), np.ones((1, points[0].size))])
    inside = np.all((ct_idx[:3] >= 0) & (ct_idx[:3] <= np.reshape(CT_SHAPE, (3, 1)) - 1), axis=0)
    inside = inside.reshape(case.shape) | ct_covers_all
    np.testing.assert_allclose(case.ct[inside], expected[inside], atol=1e-3)
    assert np.all(case.ct[~inside] == CT_FILL_HU)
    assert (~inside).any() or ct_covers_all


def test_autopet_tree_resamples_ct_and_keeps_masks_aligned(tmp_path):
    write_case(tmp_path / "PETCT_a" / "study1")
    write_case(tmp_path / "PETCT_b" / "study7", ct=False, ctres=True, organs=True)
    (tmp_path / "PETCT_b" / "notes").mkdir()
    assert detect_layout(tmp_path) == "autopet"
    cases = list(iter_cases(tmp_path))
    assert [c.case_id for c in cases] == ["PETCT_a_study1", "PETCT_b_study7"]
    check_case(cases[0])
    check_case(cases[1], ct_covers_all=True)
    assert cases[0].organs is None and set(np.unique(cases[1].organs)) == {0, 4}
    single = find_cases(tmp_path / "PETCT_a" / "study1")
    assert [c.case_id for c in single] == ["PETCT_a_study1"]


def test_nnunet_raw_layout(tmp_path):
    images, labels = tmp_path / "imagesTr", tmp_path / "labelsTr"
    images.mkdir()
    labels.mkdir()
    for case in ("c001", "c002"):
        folder = write_case(tmp_path / "tmp" / case, ctres=True, ct=False)
        (folder / "CTres.nii.gz").rename(images / f"{case}_0000.nii.gz")
        (folder / "SUV.nii.gz").rename(images / f"{case}_0001.nii.gz")
        (folder / "SEG.nii.gz").rename(labels / f"{case}.nii.gz")
    assert detect_layout(tmp_path) == "nnunet"
    cases = list(iter_cases(tmp_path))
    assert [c.case_id for c in cases] == ["c001", "c002"]
    check_case(cases[1], ct_covers_all=True)
    # dataset.json naming the channels the other way round swaps CT and PET.
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "PET", "1": "CT"}}))
    swapped = find_cases(tmp_path)[0]
    assert swapped.pet.name == "c001_0000.nii.gz" and swapped.ctres.name == "c001_0001.nii.gz"


def test_manifest_layout_and_its_errors(tmp_path):
    write_case(tmp_path / "data" / "one", suffix=".nii")
    manifest = {"format": "anatoseg-manifest", "version": 1, "cases": [
        {"case": "one", "pet": "data/one/SUV.nii", "ct": "data/one/CT.nii", "lesions": "data/one/SEG.nii",
         "cohort": "test"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert detect_layout(tmp_path) == "manifest"
    (case,) = iter_cases(tmp_path / "manifest.json")
    check_case(case)
    assert case.meta["cohort"] == "test"
    raw = load_case(find_cases(tmp_path)[0], canonical=False)
    assert isinstance(raw.pet, np.memmap)  # uncompressed .nii stays lazy
    manifest["cases"][0].pop("ct")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match='needs "ct" or "ctres"'):
        find_cases(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        find_cases(tmp_path)


def test_cases_stream_one_at_a_time(tmp_path):
    write_case(tmp_path / "p1" / "s")
    write_case(tmp_path / "p2" / "s", suffix=".nii")
    suv = tmp_path / "p2" / "s" / "SUV.nii"
    suv.write_bytes(suv.read_bytes()[:400])  # the header reads, the voxels are cut short
    stream = iter_cases(tmp_path)
    assert next(stream).case_id == "p1_s"  # the second case's voxels are not touched yet
    with pytest.raises(DataError, match="p2/s/SUV.nii"):
        next(stream)
    suv.write_bytes(b"broken")  # an unreadable header is found before any case is read
    with pytest.raises(DataError, match="p2_s: .*p2/s/SUV.nii: cannot read NIfTI header"):
        next(iter_cases(tmp_path))


def test_mask_on_another_grid_and_disjoint_ct_are_rejected(tmp_path):
    folder = write_case(tmp_path / "p" / "s")
    save_nifti(folder / "SEG.nii.gz", np.zeros((5, 5, 5), np.uint8), PET_AFFINE)
    with pytest.raises(DataError, match="lesion mask is on a different grid") as info:
        list(iter_cases(tmp_path))
    assert "SEG.nii.gz" in str(info.value)
    folder = write_case(tmp_path / "q" / "s")
    far = CT_AFFINE.copy()
    far[:3, 3] += 5000.0
    save_nifti(folder / "CT.nii.gz", np.zeros(CT_SHAPE, np.float32), far)
    with pytest.raises(DataError, match="does not overlap") as info:
        load_case(find_cases(folder)[0])
    assert "CT.nii.gz" in str(info.value)


def test_unknown_organ_label_is_rejected(tmp_path):
    folder = write_case(tmp_path / "p" / "s", organs=True)
    labels = np.zeros(PET_SHAPE, np.uint8)
    labels[0, 0, 0] = 99
    save_nifti(folder / "ORGANS.nii.gz", labels, PET_AFFINE)
    with pytest.raises(DataError, match="unknown values 99"):
        load_case(find_cases(folder)[0])
