"""``to_ras``/``from_ras`` through nibabel's orientation helpers: views (no copy, memory maps stay lazy),
voxel-to-world preserved, and an exact round trip for every axis permutation and flip."""

import itertools

import numpy as np
import pytest

pytest.importorskip("nibabel")

from anatoseg.data.nifti import from_ras, to_ras  # noqa: E402

ORDERS = [(perm, signs) for perm in itertools.permutations(range(3)) for signs in itertools.product((1, -1), repeat=3)]


def oriented_affine(perm, signs, spacing=(2.0, 3.0, 4.0)):
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world, sign) in enumerate(zip(perm, signs, strict=True)):
        affine[world, axis] = sign * spacing[axis]
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


@pytest.mark.parametrize("perm, signs", ORDERS, ids=lambda v: "".join(map(str, v)))
def test_round_trip_view_and_world_positions(perm, signs):
    data = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    affine = oriented_affine(perm, signs)
    ras, ras_affine = to_ras(data, affine)
    assert np.shares_memory(ras, data)
    assert np.all(np.diag(ras_affine)[:3] > 0) and np.allclose(ras_affine[:3, :3], np.diag(np.diag(ras_affine)[:3]))
    for index in [(0, 0, 0), (2, 3, 4), (1, 2, 0)]:
        new_index = np.argwhere(ras == data[index])[0]
        np.testing.assert_allclose(affine @ [*index, 1], ras_affine @ [*new_index, 1])
    back = from_ras(ras, affine)
    assert np.shares_memory(back, data)
    np.testing.assert_array_equal(back, data)


def test_memory_map_stays_a_view(tmp_path):
    path = tmp_path / "volume.npy"
    np.save(path, np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    mapped = np.load(path, mmap_mode="r")
    ras, _ = to_ras(mapped, oriented_affine((1, 0, 2), (-1, 1, -1)))
    assert np.shares_memory(ras, mapped) and not ras.flags.writeable
