"""The no-learning SUV-threshold baseline on a tiny synthetic volume with known answers."""

import numpy as np
import pytest

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.experiments.sanity import organ_mask, remove_small, sanity_baseline

SPACING = (4.0, 4.0, 4.0)  # voxel = 0.064 ml: one voxel < 0.1 ml <= two voxels


def _case():
    """SUV (Z, Y, X) = (12, 10, 8): background 1; lesion A 2x2x2 at SUV 5; lesion B one voxel at SUV 6;
    two corner-touching voxels at SUV 3; brain block SUV 10, bladder block SUV 20 (organ map ids)."""
    suv = np.ones((12, 10, 8))
    organs = np.zeros(suv.shape, dtype=np.uint8)
    suv[2:4, 2:4, 2:4] = 5.0
    suv[6, 6, 6] = 6.0
    suv[9, 1, 1] = suv[10, 2, 2] = 3.0
    suv[0:2, 6:9, 5:8] = 10.0
    organs[0:2, 6:9, 5:8] = ORGAN_IDS["brain"]
    suv[10:12, 6:9, 5:8] = 20.0
    organs[10:12, 6:9, 5:8] = ORGAN_IDS["urinary_bladder"]
    lesion_a = np.zeros(suv.shape, dtype=bool)
    lesion_a[2:4, 2:4, 2:4] = True
    return suv, organs, lesion_a


def test_fixed_threshold_minus_organs_minus_small():
    suv, organs, lesion_a = _case()
    mask = sanity_baseline(suv, SPACING, organs)
    assert mask.dtype == bool and mask.shape == suv.shape
    # B (1 voxel) and the corner pair (18-connectivity: two 1-voxel components) fall under 0.1 ml
    np.testing.assert_array_equal(mask, lesion_a)


def test_without_organ_map_keeps_physiological_uptake():
    suv, organs, lesion_a = _case()
    mask = sanity_baseline(suv, SPACING)
    assert mask.sum() == lesion_a.sum() + 18 + 18
    assert sanity_baseline(suv, SPACING, min_volume_ml=1.0).sum() == 36  # only the organ blocks reach 1 ml (1.15)
    np.testing.assert_array_equal(sanity_baseline(suv, SPACING, min_volume_ml=0.0) & ~(organs > 0),
                                  (suv >= 2.5) & ~(organs > 0))


def test_relative_threshold():
    suv, organs, lesion_a = _case()
    # case SUVmax = 20 (bladder): level 8 leaves lesion A (SUV 5) out
    assert not sanity_baseline(suv, SPACING, organs, method="relative").any()
    # SUVmax outside the removed organs = 6 (lesion B): level 2.4 keeps A, B and the pair fall for size
    np.testing.assert_array_equal(
        sanity_baseline(suv, SPACING, organs, method="relative", suvmax_region="outside_organs"), lesion_a)
    np.testing.assert_array_equal(
        sanity_baseline(suv, SPACING, organs, method="relative", fraction=0.2), lesion_a)  # level 4


def test_helpers_and_errors():
    suv, organs, _ = _case()
    assert organ_mask(organs, ["brain"]).sum() == 18
    assert organ_mask(organs, []).sum() == 0
    with pytest.raises(ValueError, match="unknown organ"):
        organ_mask(organs, ["spleeen"])
    pair = np.zeros((3, 3, 3), dtype=bool)
    pair[0, 0, 0] = pair[0, 1, 1] = True  # edge neighbours: one 18-connected component of 2 voxels
    np.testing.assert_array_equal(remove_small(pair, SPACING, 0.1), pair)
    with pytest.raises(ValueError, match="method"):
        sanity_baseline(suv, SPACING, method="otsu")
    with pytest.raises(ValueError, match="organ map shape"):
        sanity_baseline(suv, SPACING, organs[:-1])
