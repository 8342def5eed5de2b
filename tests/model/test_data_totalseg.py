"""TotalSegmentator v2 outputs (folder of masks, or multi-label map + class list) to the organ label set."""

import json

import pytest

pytest.importorskip("nibabel")

import numpy as np  # noqa: E402

from anatoseg.data import ORGAN_IDS, ORGANS, Volume, save_nifti  # noqa: E402
from anatoseg.data.labels import LEFT_RIGHT_PAIRS, PHANTOM_ONLY, swap_left_right  # noqa: E402
from anatoseg.data.totalseg import (  # noqa: E402
    TOTALSEG_TO_ORGAN,
    TOTALSEG_V2_HEAD_GLANDS,
    TOTALSEG_V2_TOTAL,
    organs_from_totalseg_folder,
    organs_from_totalseg_multilabel,
    read_class_list,
)
from anatoseg.errors import DataError  # noqa: E402

CT_AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (12, 12, 12)


def block(x0, x1):
    mask = np.zeros(SHAPE, np.uint8)
    mask[x0:x1, 2:10, 2:10] = 1
    return mask


def test_label_set_is_fixed_and_covers_the_totalseg_classes():
    assert [o.id for o in ORGANS] == list(range(1, 22))
    assert set(TOTALSEG_TO_ORGAN.values()) == {o.name for o in ORGANS} - PHANTOM_ONLY
    assert TOTALSEG_TO_ORGAN["colon"] == TOTALSEG_TO_ORGAN["duodenum"] == "bowel"
    assert TOTALSEG_TO_ORGAN["parotid_gland_left"] == "salivary_glands"
    assert TOTALSEG_V2_TOTAL[5] == "liver" and TOTALSEG_V2_TOTAL[21] == "urinary_bladder"
    assert TOTALSEG_V2_TOTAL[25] == "sacrum" and TOTALSEG_V2_TOTAL[50] == "vertebrae_C1"
    assert TOTALSEG_V2_TOTAL[92] == "rib_left_1" and TOTALSEG_V2_TOTAL[116] == "sternum"
    assert len(TOTALSEG_V2_TOTAL) == 117
    assert "lymph_node" not in " ".join(TOTALSEG_TO_ORGAN)


def test_folder_of_masks_with_breasts_onto_the_pet_grid(tmp_path):
    seg = tmp_path / "seg"
    save_nifti(seg / "liver.nii.gz", block(0, 3), CT_AFFINE)
    save_nifti(seg / "lung_upper_lobe_left.nii.gz", block(3, 5), CT_AFFINE)
    save_nifti(seg / "vertebrae_T5.nii.gz", block(5, 6), CT_AFFINE)
    save_nifti(seg / "rib_right_12.nii.gz", block(6, 7), CT_AFFINE)
    save_nifti(seg / "gluteus_maximus_left.nii.gz", block(7, 8), CT_AFFINE)
    save_nifti(seg / "gallbladder.nii.gz", block(8, 9), CT_AFFINE)  # not in the label set
    save_nifti(tmp_path / "breasts" / "breast.nii.gz", block(9, 11), CT_AFFINE)
    organs = organs_from_totalseg_folder(seg, breasts=tmp_path / "breasts")
    assert organs.data[1, 5, 5] == ORGAN_IDS["liver"]
    assert organs.data[4, 5, 5] == ORGAN_IDS["lungs"]
    assert organs.data[5, 5, 5] == organs.data[6, 5, 5] == ORGAN_IDS["skeleton"]
    assert organs.data[7, 5, 5] == ORGAN_IDS["muscle"] and organs.data[8, 5, 5] == 0
    assert organs.data[10, 5, 5] == ORGAN_IDS["breasts"]
    # On a coarser PET grid: a PET voxel centre at world x = 8 mm lies in CT voxel x = 4 (lungs).
    pet_affine = np.diag([4.0, 4.0, 4.0, 1.0])
    on_pet = organs_from_totalseg_folder(seg, reference=Volume(np.zeros((6, 6, 6), np.float32), pet_affine))
    assert on_pet.shape == (6, 6, 6) and on_pet.data.dtype == np.uint8
    assert on_pet.data[2, 2, 2] == ORGAN_IDS["lungs"] and on_pet.data[0, 2, 2] == ORGAN_IDS["liver"]
    np.testing.assert_array_equal(on_pet.affine, pet_affine)


def test_multilabel_map_with_default_and_given_class_lists(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[0:2] = 5      # liver
    labels[2:4] = 21     # urinary bladder
    labels[4:5] = 80     # gluteus maximus: muscle
    labels[5:6] = 4      # gallbladder: ignored
    labels[6:8] = 116    # sternum
    path = save_nifti(tmp_path / "total.nii.gz", labels, CT_AFFINE)
    organs = organs_from_totalseg_multilabel(path).data
    assert organs[0, 0, 0] == ORGAN_IDS["liver"] and organs[2, 0, 0] == ORGAN_IDS["urinary_bladder"]
    assert organs[4, 0, 0] == ORGAN_IDS["muscle"] and organs[5, 0, 0] == 0
    assert organs[6, 0, 0] == ORGAN_IDS["skeleton"] and organs[9, 0, 0] == 0
    # A class list of our own numbering, as JSON and as text.
    relabelled = np.zeros(SHAPE, np.uint8)
    relabelled[0:2], relabelled[2:4] = 1, 2
    path = save_nifti(tmp_path / "custom.nii.gz", relabelled, CT_AFFINE)
    (tmp_path / "classes.json").write_text(json.dumps({"1": "heart", "2": "brain"}))
    (tmp_path / "classes.txt").write_text("# id name\n1 heart\n2: brain\n")
    for class_list in (tmp_path / "classes.json", tmp_path / "classes.txt"):
        assert read_class_list(class_list) == {1: "heart", 2: "brain"}
        organs = organs_from_totalseg_multilabel(path, class_list).data
        assert organs[0, 0, 0] == ORGAN_IDS["heart"] and organs[3, 0, 0] == ORGAN_IDS["brain"]


def test_head_glands_multilabel_map_gives_the_salivary_glands(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[0:2], labels[2:4], labels[4:6] = 1, 7, 10  # eye (ignored), parotid, submandibular gland
    path = save_nifti(tmp_path / "head.nii.gz", labels, CT_AFFINE)
    organs = organs_from_totalseg_multilabel(path, TOTALSEG_V2_HEAD_GLANDS).data
    assert organs[0, 0, 0] == 0 and organs[2, 0, 0] == organs[5, 0, 0] == ORGAN_IDS["salivary_glands"]


def test_values_missing_from_the_class_list_are_rejected(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, 0] = 200
    path = save_nifti(tmp_path / "total.nii.gz", labels, CT_AFFINE)
    with pytest.raises(DataError, match="unknown values 200") as info:
        organs_from_totalseg_multilabel(path)
    assert "total.nii.gz" in str(info.value)
    with pytest.raises(DataError, match="no TotalSegmentator structure"):
        organs_from_totalseg_folder(tmp_path)


def test_swap_left_right_swaps_each_pair_and_nothing_else():
    organs = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    swapped = swap_left_right(organs)
    assert swapped.dtype == np.uint8 and swapped.shape == organs.shape and swapped is not organs
    for left, right in LEFT_RIGHT_PAIRS:
        assert (swapped[organs == ORGAN_IDS[left]] == ORGAN_IDS[right]).all()
        assert (swapped[organs == ORGAN_IDS[right]] == ORGAN_IDS[left]).all()
    paired = np.isin(organs, [ORGAN_IDS[name] for pair in LEFT_RIGHT_PAIRS for name in pair])
    np.testing.assert_array_equal(swapped[~paired], organs[~paired])
    np.testing.assert_array_equal(swap_left_right(swapped), organs)
    with pytest.raises(TypeError, match="uint8"):
        swap_left_right(organs.astype(np.int64))
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        swap_left_right(organs[0])
