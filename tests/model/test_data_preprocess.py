"""Fingerprint JSON and preprocessing (crop to body, resampling, normalisation, mapping back)."""

import json

import pytest

pytest.importorskip("nibabel")

import numpy as np  # noqa: E402

from anatoseg.data import (  # noqa: E402
    NUM_ORGANS,
    Preprocessing,
    compute_fingerprint,
    crop_to_body,
    load_fingerprint,
    preprocess_case,
    save_fingerprint,
)
from anatoseg.data.phantom import generate_case  # noqa: E402
from anatoseg.data.preprocess import body_bbox, normalise_ct, normalise_suv  # noqa: E402
from anatoseg.errors import ConfigError, DataError  # noqa: E402

SPACING = 8.0


@pytest.fixture(scope="module")
def cases():
    # Case 0 ([21, 5] since phantom v2) has lesions that survive 12 mm, and its grid phase leaves an air voxel
    # between the table and the back.
    return [generate_case([21, i], spacing=SPACING).to_case() for i in (5, 4)]


@pytest.fixture(scope="module")
def fingerprint(cases):
    return compute_fingerprint(cases, samples_per_case=5000)


def test_crop_to_body_drops_air_and_table(cases):
    case = cases[0]
    box = body_bbox(case.ct, case.spacing, margin_mm=0.0)
    cropped = crop_to_body(case, margin_mm=0.0)
    np.testing.assert_array_equal(cropped.pet, case.pet[box])
    np.testing.assert_allclose(cropped.affine @ [0, 0, 0, 1], case.affine @ [box[0].start, box[1].start,
                                                                             box[2].start, 1])
    assert cropped.shape[2] < case.shape[2] and cropped.shape[1] < case.shape[1]  # X and Y of (Z, Y, X)
    # The patient table (y < -15 mm) is separated by air from the back (y = 0) and cut off ...
    assert (cropped.affine @ [0, 0, 0, 1])[1] > -15.0
    # ... and it is the only thing above -500 HU that the crop leaves out.
    outside = np.ones(case.shape, bool)
    outside[box] = False
    world_y = case.affine[1, 3] + case.affine[1, 1] * np.arange(case.shape[1])
    dense_outside = ((case.ct > -500) & outside).any(axis=(0, 2))
    assert dense_outside.any() and np.all(world_y[dense_outside] < -10.0)


def test_fingerprint_contents_and_json_round_trip(fingerprint, cases, tmp_path):
    assert fingerprint["n_cases"] == 2 and len(fingerprint["shapes"]) == 2
    np.testing.assert_allclose(fingerprint["median_spacing"], [SPACING] * 3, atol=1e-6)
    ct, pet = fingerprint["intensity"]["ct"], fingerprint["intensity"]["pet"]
    assert -500 < ct["percentile_00_5"] < -50 and ct["percentile_99_5"] > 300  # fat ... bone
    assert ct["min"] > -500 and 0.2 < pet["mean"] < 3.0 and pet["max"] > 5.0
    assert fingerprint["lesions"]["n_positive"] == 2 and fingerprint["organs"]["cases_with"]["liver"] == 2
    path = save_fingerprint(fingerprint, tmp_path / "fingerprint.json")
    assert load_fingerprint(path) == json.loads(json.dumps(fingerprint))
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DataError, match="not an anatoseg fingerprint"):
        load_fingerprint(tmp_path / "other.json")
    # Spacings and shapes are (Z, Y, X); a fingerprint that does not say so is refused.
    assert fingerprint["axes"] == "zyx" and fingerprint["shapes"][0] == list(cases[0].shape)
    old = {key: value for key, value in fingerprint.items() if key != "axes"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"fingerprint does not record its axis order.*\(Z, Y, X\)"):
        load_fingerprint(tmp_path / "old.json")


def test_preprocessing_parameters(fingerprint):
    params = Preprocessing.from_fingerprint(fingerprint, target_spacing=(10.0, 10.0, 12.0))
    assert params.target_spacing == (10.0, 10.0, 12.0)
    assert params.ct_clip == (fingerprint["intensity"]["ct"]["percentile_00_5"],
                              fingerprint["intensity"]["ct"]["percentile_99_5"])
    assert Preprocessing.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(ConfigError):
        Preprocessing(target_spacing=(1.0, 0.0, 1.0), ct_clip=(0, 1), ct_mean=0, ct_std=1)
    with pytest.raises(ConfigError):
        Preprocessing.from_dict({"target_spacing": [1, 1, 1]})


def test_preprocess_and_restore(cases, fingerprint):
    case = cases[0]
    params = Preprocessing.from_fingerprint(fingerprint, target_spacing=(12.0, 12.0, 12.0))
    pre = preprocess_case(case, params)
    assert pre.image.dtype == np.float32 and pre.image.shape[0] == 2 and pre.image.shape[1:] == pre.lesions.shape
    np.testing.assert_allclose(np.linalg.norm(pre.affine[:3, :3], axis=0), 12.0, rtol=0.05)
    ct_lo, ct_hi = ((np.array(params.ct_clip) - params.ct_mean) / params.ct_std)
    assert ct_lo - 1e-4 <= pre.image[0].min() and pre.image[0].max() <= ct_hi + 1e-4
    assert pre.image[1].min() >= (0 - params.suv_mean) / params.suv_std - 1e-4
    np.testing.assert_allclose(normalise_ct(np.array([-5000.0, params.ct_mean]), params), [ct_lo, 0.0], atol=1e-6)
    np.testing.assert_allclose(normalise_suv(np.array([params.suv_mean, 1e6]), params),
                               [0.0, (params.suv_clip[1] - params.suv_mean) / params.suv_std], rtol=1e-6)
    assert pre.lesions.any() and set(np.unique(pre.organs)) <= set(range(NUM_ORGANS + 1))
    # At the case's own spacing the crop is undone exactly.
    same = preprocess_case(case, Preprocessing.from_fingerprint(fingerprint))
    np.testing.assert_array_equal(same.restore(same.lesions), case.lesions)
    np.testing.assert_array_equal(same.restore(same.organs), case.organs)
    # At another spacing, mapping back lands on the original organs.
    back = pre.restore(pre.organs) == 4
    original = np.asarray(case.organs) == 4
    assert back.shape == original.shape
    assert 2 * (back & original).sum() / (back.sum() + original.sum()) > 0.8
