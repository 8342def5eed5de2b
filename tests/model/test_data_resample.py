"""Resampling in world coordinates: a shifted and rotated target grid against analytic shapes."""

import pytest

pytest.importorskip("nibabel")

import numpy as np  # noqa: E402

from anatoseg.data.resample import (  # noqa: E402
    CT_FILL_HU,
    grid_for_spacing,
    overlap_fraction,
    resample_ct_to_pet,
    resample_to_grid,
    resample_to_spacing,
)
from anatoseg.errors import DataError  # noqa: E402

CENTRE = np.array([10.0, -20.0, 30.0])


def world(shape, affine):
    """World coordinates ``(3, X, Y, Z)`` of every voxel centre."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape)


def blob(points):
    """A smooth analytic function of world position (mm): a Gaussian of 25 mm sigma."""
    d2 = ((points - CENTRE.reshape(3, 1, 1, 1)) ** 2).sum(axis=0)
    return 100.0 * np.exp(-d2 / (2 * 25.0 ** 2))


def ball(points, radius=30.0):
    return ((points - CENTRE.reshape(3, 1, 1, 1)) ** 2).sum(axis=0) < radius ** 2


def rotated_affine(spacing, angles_deg, origin):
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


SOURCE_SHAPE = (64, 60, 56)
SOURCE_AFFINE = rotated_affine((2.0, 2.0, 2.5), (0, 0, 0), (-54.0, -80.0, -40.0))
TARGET_SHAPE = (40, 44, 36)
# Rotated by 30/-20/15 degrees about x/y/z, anisotropic, origin chosen so the grid sits around the blob.
TARGET_AFFINE = rotated_affine((2.5, 2.0, 3.0), (30, -20, 15), (-30.0, -60.0, -10.0))


def test_linear_resampling_matches_the_analytic_function():
    source = blob(world(SOURCE_SHAPE, SOURCE_AFFINE)).astype(np.float32)
    target_points = world(TARGET_SHAPE, TARGET_AFFINE)
    out = resample_to_grid(source, SOURCE_AFFINE, TARGET_SHAPE, TARGET_AFFINE, order=1, fill=-1.0)
    expected = blob(target_points)
    src_idx = np.linalg.inv(SOURCE_AFFINE) @ np.concatenate([target_points.reshape(3, -1),
                                                              np.ones((1, target_points[0].size))])
    upper = np.reshape(SOURCE_SHAPE, (3, 1)) - 1
    inside = np.all((src_idx[:3] >= 0) & (src_idx[:3] <= upper), axis=0).reshape(TARGET_SHAPE)
    outside = np.any((src_idx[:3] < -1e-3) | (src_idx[:3] > upper + 1e-3), axis=0).reshape(TARGET_SHAPE)
    assert inside.mean() > 0.5 and outside.sum() > 100
    assert np.abs(out[inside] - expected[inside]).max() < 0.5  # trilinear error on a 25 mm Gaussian, peak 100
    assert np.all(out[outside] == -1.0)


def test_nearest_resampling_of_a_ball_matches_the_analytic_ball():
    source = ball(world(SOURCE_SHAPE, SOURCE_AFFINE)).astype(np.uint8)
    out = resample_to_grid(source, SOURCE_AFFINE, TARGET_SHAPE, TARGET_AFFINE, order=0, dtype=np.uint8)
    expected = ball(world(TARGET_SHAPE, TARGET_AFFINE))
    dice = 2 * np.sum(out.astype(bool) & expected) / (out.sum() + expected.sum())
    assert dice > 0.95
    # Only voxels near the surface may disagree: nothing deeper than one source voxel from it.
    d = np.sqrt(((world(TARGET_SHAPE, TARGET_AFFINE) - CENTRE.reshape(3, 1, 1, 1)) ** 2).sum(axis=0))
    wrong = out.astype(bool) != expected
    assert np.all(np.abs(d[wrong] - 30.0) < 2.5)


def test_ct_onto_pet_fills_outside_and_rejects_disjoint_grids():
    ct = np.full((10, 10, 10), 40, dtype=np.int16)
    ct_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    pet_affine = np.diag([4.0, 4.0, 4.0, 1.0])
    pet_affine[:3, 3] = [10.0, 0.0, 0.0]  # half of the PET grid lies beyond the CT in x
    out = resample_ct_to_pet(ct, ct_affine, (8, 4, 4), pet_affine)
    assert out.dtype == np.float32
    assert np.all(out[:2] == 40) and np.all(out[-2:] == CT_FILL_HU)
    far = pet_affine.copy()
    far[:3, 3] = [5000.0, 0, 0]
    assert overlap_fraction(ct.shape, ct_affine, (8, 4, 4), far) == 0.0
    with pytest.raises(DataError, match="does not overlap"):
        resample_ct_to_pet(ct, ct_affine, (8, 4, 4), far, path="ct.nii.gz")


def test_resample_to_spacing_keeps_the_field_of_view():
    affine = rotated_affine((1.0, 1.0, 2.0), (0, 0, 40), (5.0, 6.0, 7.0))
    shape, new_affine = grid_for_spacing((30, 20, 10), affine, (3.0, 2.0, 4.0))
    assert shape == (10, 10, 5)
    # The outer voxel corners coincide: corner (-0.5, ...) maps to the same world point.
    corner_old = affine @ [-0.5, -0.5, -0.5, 1]
    corner_new = new_affine @ [-0.5, -0.5, -0.5, 1]
    np.testing.assert_allclose(corner_old, corner_new, atol=1e-9)
    far_old = affine @ [29.5, 19.5, 9.5, 1]
    far_new = new_affine @ [9.5, 9.5, 4.5, 1]
    np.testing.assert_allclose(far_old, far_new, atol=1e-9)
    data = np.ones((30, 20, 10), np.float32)
    out, out_affine = resample_to_spacing(data, affine, (3.0, 2.0, 4.0))
    assert out.shape == shape and np.allclose(out, 1.0)
    np.testing.assert_allclose(out_affine, new_affine)
