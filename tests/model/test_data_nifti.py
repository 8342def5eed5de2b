"""NIfTI round trips keep data and affine; bad files give DataError naming the file."""

import gzip

import pytest

nib = pytest.importorskip("nibabel")

import numpy as np  # noqa: E402

from anatoseg.data.axes import xyz_to_zyx, zyx_to_xyz  # noqa: E402
from anatoseg.data.nifti import (  # noqa: E402
    check_labels,
    file_to_zyx,
    load_label_nifti,
    load_nifti,
    same_grid,
    save_nifti,
    spacing_of,
    to_ras,
    zyx_to_file,
)
from anatoseg.errors import DataError  # noqa: E402


def oblique_affine():
    """Anisotropic spacing, a rotation about two axes and an LPS-like flip."""
    a, b = np.radians(20), np.radians(-10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-2.04, -2.04, 3.0])
    affine[:3, 3] = [401.3, 250.8, -1203.5]
    return affine


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_round_trip_keeps_data_and_affine(tmp_path, suffix, dtype):
    rng = np.random.default_rng(1)
    data = (rng.uniform(0, 200, (7, 5, 9))).astype(dtype)
    path = save_nifti(tmp_path / f"img{suffix}", data, oblique_affine())
    volume = load_nifti(path, dtype=None)
    assert volume.data.dtype == dtype
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, oblique_affine(), atol=1e-4)
    np.testing.assert_allclose(volume.spacing, [2.04, 2.04, 3.0], atol=1e-5)
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_uncompressed_nii_is_memory_mapped(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    path = save_nifti(tmp_path / "img.nii", data, np.eye(4))
    assert isinstance(load_nifti(path).data, np.memmap)
    assert not isinstance(load_nifti(path, mmap=False).data, np.memmap)


def test_trailing_singleton_axes_are_accepted(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    assert load_nifti(tmp_path / "v.nii.gz").shape == (3, 4, 5)


def write_bad(tmp_path, kind):
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "corrupt":
        path.write_bytes(b"this is not a nifti file at all" * 20)
    elif kind == "truncated":
        save_nifti(path, np.random.default_rng(0).normal(size=(30, 30, 30)).astype(np.float32), np.eye(4))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "gzip_garbage":
        path.write_bytes(gzip.compress(b"\x00" * 100))
    elif kind == "4d":
        nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)), path)
    elif kind == "nan":
        data = np.ones((4, 4, 4), np.float32)
        data[1, 2, 3] = np.nan
        save_nifti(path, data, np.eye(4))
    elif kind == "inf":
        data = np.ones((4, 4, 4), np.float32)
        data[0, 0, 0] = -np.inf
        save_nifti(path, data, np.eye(4))
    return path


@pytest.mark.parametrize("kind,message", [
    ("corrupt", "cannot read NIfTI"), ("truncated", "truncated or corrupt"), ("gzip_garbage", "cannot read NIfTI"),
    ("4d", "4D image"), ("nan", "NaN or infinite"), ("inf", "NaN or infinite"),
])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, kind, message):
    path = write_bad(tmp_path, kind)
    with pytest.raises(DataError, match=message) as info:
        load_nifti(path)
    assert str(path) in str(info.value)


def test_missing_and_misnamed_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_nifti(tmp_path / "nope.nii.gz")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="not a NIfTI file name"):
        load_nifti(tmp_path / "x.txt")


def test_label_values_are_checked(tmp_path):
    data = np.zeros((4, 4, 4), np.uint8)
    data[1, 1, 1] = 3
    path = save_nifti(tmp_path / "seg.nii.gz", data, np.eye(4))
    with pytest.raises(DataError, match="unknown values 3"):
        load_label_nifti(path, {0, 1}, what="lesion mask")
    assert load_label_nifti(path, {0, 1, 2, 3}).data.dtype == np.uint8
    with pytest.raises(DataError, match="non-integer"):
        check_labels(np.array([[[0.5]]], np.float32), {0, 1}, path)


def test_to_ras_flips_without_moving_voxels():
    affine = np.diag([-2.0, -3.0, 4.0, 1.0])
    affine[:3, 3] = [100, 50, -20]
    data = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    ras, ras_affine = to_ras(data, affine)
    assert np.all(np.diag(ras_affine)[:3] > 0)
    # Every voxel keeps its world position: compare world coordinates of the same value.
    for index in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        value = data[index]
        new_index = np.argwhere(ras == value)[0]
        np.testing.assert_allclose(affine @ [*index, 1], ras_affine @ [*new_index, 1])


@pytest.mark.parametrize("case", ["lps", "permuted", "oblique"])
def test_to_ras_matches_nibabel_closest_canonical(case):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(4, 5, 6)).astype(np.float32)
    affine = {"lps": np.diag([-2.0, -2.0, 3.0, 1.0]),
              "permuted": np.array([[0, 0, -3.0, 10], [2.0, 0, 0, -5], [0, -1.5, 0, 7], [0, 0, 0, 1]]),
              "oblique": oblique_affine()}[case]
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    ras, ras_affine = to_ras(data, affine)
    np.testing.assert_array_equal(ras, np.asarray(canonical.dataobj))
    np.testing.assert_allclose(ras_affine, canonical.affine, atol=1e-9)


def test_same_grid_compares_voxel_positions():
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    shifted = affine.copy()
    shifted[0, 3] = 1.0  # half a voxel
    assert same_grid((4, 5, 6), affine, (4, 5, 6), affine + 1e-6)
    assert not same_grid((4, 5, 6), affine, (4, 5, 6), shifted)
    assert not same_grid((4, 5, 6), affine, (4, 5, 7), affine)


@pytest.mark.parametrize("case", ["lps", "permuted", "oblique"])
def test_file_to_zyx_keeps_world_positions_and_zyx_to_file_undoes_it(case):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = {"lps": np.diag([-2.0, -2.0, 3.0, 1.0]),
              "permuted": np.array([[0, 0, -3.0, 10], [2.0, 0, 0, -5], [0, -1.5, 0, 7], [0, 0, 0, 1]]),
              "oblique": oblique_affine()}[case]
    zyx, zyx_affine = file_to_zyx(data, affine)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    np.testing.assert_array_equal(zyx, np.asarray(canonical.dataobj).transpose(2, 1, 0))
    # Index axes 0, 1, 2 run (closest to) S, A, R, and every voxel keeps its world position.
    assert [int(np.argmax(np.abs(zyx_affine[:3, axis]))) for axis in range(3)] == [2, 1, 0]
    for index in [(0, 0, 0), (3, 4, 5), (1, 3, 2)]:
        new_index = np.argwhere(zyx == data[index])[0]
        np.testing.assert_allclose(affine @ [*index, 1], zyx_affine @ [*new_index, 1], atol=1e-9)
    np.testing.assert_array_equal(zyx_to_file(zyx, affine), data)


def test_xyz_to_zyx_and_back():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [1, 2, 3]
    data = np.arange(24).reshape(2, 3, 4)
    zyx, zyx_affine = xyz_to_zyx(data, affine)
    assert zyx.shape == (4, 3, 2) and spacing_of(zyx_affine) == (4.0, 3.0, 2.0)
    np.testing.assert_allclose(zyx_affine @ [3, 2, 1, 1], affine @ [1, 2, 3, 1])
    back, back_affine = zyx_to_xyz(zyx, zyx_affine)
    np.testing.assert_array_equal(back, data)
    np.testing.assert_array_equal(back_affine, affine)
