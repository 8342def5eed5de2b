"""Phantom v2: false-positive sources with their labels, context lesions at their rates and where they are
said to be, lesion-free cases, PET–CT misregistration, and the manifest's lesion and source records."""

import json
import re

import pytest

pytest.importorskip("nibabel")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from anatoseg.cli import app  # noqa: E402
from anatoseg.data import ORGAN_IDS, ORGANS  # noqa: E402
from anatoseg.data.phantom import generate_case, generate_cohort  # noqa: E402
from anatoseg.data.phantom.anatomy import build_anatomy, paint_anatomy  # noqa: E402
from anatoseg.data.phantom.grid import Grid  # noqa: E402
from anatoseg.data.phantom.lesions import LesionPlacer, plan_lesions  # noqa: E402
from anatoseg.data.phantom.misregister import Misregistration  # noqa: E402
from anatoseg.data.phantom.records import relation  # noqa: E402
from anatoseg.data.phantom.shapes import fraction  # noqa: E402
from anatoseg.data.phantom.tissues import Tissue, hu_table, suv_table  # noqa: E402

SPACING = 8.0
KINDS = {"muscle", "bowel_focal", "uterus", "ovary", "ureter_urine", "thyroid", "brown_fat", "salivary_gland",
         "tonsil", "injection_site", "reactive_node"}
LESION_KEYS = {"site", "centre_mm", "centre_zyx", "diameter_mm", "volume_ml", "suv", "host_suv", "contrast",
               "relation", "touches", "hard"}


def seed_with_every_source():
    """The first cohort-3 seed whose anatomy has every kind of source (the anatomy is drawn first)."""
    for i in range(40):
        kinds = {kind for kind, *_ in build_anatomy(np.random.default_rng([3, i])).sources}
        if kinds == KINDS:
            return [3, i]
    raise AssertionError("no seed with every uptake source in 40")


@pytest.fixture(scope="module")
def still():
    """A positive noise-free case without misregistration (organ map and PET in one frame)."""
    return generate_case(seed_with_every_source(), spacing=SPACING, noise=False, misregistration=0.0)


def test_each_new_structure_is_painted_with_its_label(still):
    assert set(np.unique(still.organs)) == set(range(len(ORGANS) + 1))
    assert {s["kind"] for s in still.uptake_sources} == KINDS
    for source in still.uptake_sources:
        index = tuple(source["centre_zyx"][::-1])
        block = still.organs[tuple(slice(max(i - 1, 0), i + 2) for i in index)]
        if source["organ"] is None:  # injection site, reactive nodes: hard negatives with no organ label
            assert source["kind"] in ("injection_site", "reactive_node")
        else:
            assert (block == ORGAN_IDS[source["organ"]]).any(), source
    hot = [s for s in still.uptake_sources if s["kind"] in ("injection_site", "ureter_urine")]
    liver = still.pet[still.organs == ORGAN_IDS["liver"]].mean()
    assert all(still.pet[tuple(s["centre_zyx"][::-1])] > liver for s in hot)
    table = hu_table("petct", np.random.default_rng(0))
    assert table[Tissue.FAT] + 20 < table[Tissue.BROWN_FAT] < table[Tissue.SOFT_TISSUE]


def test_active_states_set_the_uptake():
    states = {t for i in range(60) for t in build_anatomy(np.random.default_rng([9, i])).active}
    assert states == {Tissue.BROWN_FAT, Tissue.UTERUS, Tissue.OVARY, Tissue.MUSCLE_GROUP}
    rest, active = suv_table(np.random.default_rng(1)), suv_table(np.random.default_rng(1), states)
    for tissue in states:
        assert active[tissue] >= 2.0 > rest[tissue]


def test_negative_case_is_lesion_free_and_keeps_every_source(still):
    negative = generate_case(seed_with_every_source(), spacing=SPACING, noise=False, misregistration=0.0,
                             positive=False)
    assert not negative.lesions.any() and negative.lesion_info == []
    assert negative.uptake_sources == still.uptake_sources and still.lesion_info
    np.testing.assert_array_equal(negative.organs, still.organs)


def test_lesion_plan_rates():
    rng = np.random.default_rng(0)
    plans = [[site for site, _ in plan_lesions(rng)] for _ in range(3000)]
    share = {site: np.mean([site in plan for plan in plans])
             for site in ("breast", "adrenal", "vertebral", "brain", "bone_diffuse", "internal_mammary_node",
                          "supraclavicular_node", "pleural")}
    assert abs(share["breast"] - 0.85) < 0.03 and abs(share["bone_diffuse"] - 0.08) < 0.02
    assert abs(share["adrenal"] - 0.15) < 0.025 and abs(share["vertebral"] - 0.15) < 0.025
    assert 0.04 < share["brain"] < 0.12
    assert min(share["internal_mammary_node"], share["supraclavicular_node"], share["pleural"]) > 0.05
    assert all(plan for plan in plans)
    hard = dict(pair for _ in range(300) for pair in plan_lesions(rng))
    assert hard["brain"] == "in_brain" and hard["pelvic_node"] == "near_bladder"


@pytest.fixture(scope="module")
def painted():
    rng = np.random.default_rng([5, 0])
    anatomy = build_anatomy(rng)
    grid = Grid.covering(*anatomy.bounds, (4.0, 4.0, 6.0))
    tissue, organs = paint_anatomy(anatomy, grid)
    return anatomy, grid, tissue, organs, suv_table(rng, anatomy.active), hu_table("petct", rng)


def placed(painted, site, tries=12):
    """(lesion, relation, touches) for each of ``tries`` lone placements at ``site``."""
    anatomy, grid, tissue, organs, suv, hu = painted
    out = []
    for k in range(tries):
        lesion = LesionPlacer(np.random.default_rng([site == "brain", k, len(site)]), anatomy, grid, tissue, organs,
                              suv, hu, "petct").place(site, None)
        if lesion is not None:
            slices, f = fraction(grid, lesion.shape)
            out.append((lesion, *relation(f, organs[slices])))
    return out


def test_context_lesions_are_where_the_organ_map_says(painted):
    kidneys = {"kidney_left", "kidney_right"}
    adrenal = placed(painted, "adrenal")
    assert len(adrenal) >= 10
    assert all(rel in {f"abutting:{k}" for k in kidneys} and lesion.hard == "near_kidney"
               for lesion, rel, _ in adrenal), [r for _, r, _ in adrenal]
    vertebral = placed(painted, "vertebral")
    assert len(vertebral) >= 8
    for lesion, rel, touches in vertebral:
        target = "aorta" if lesion.hard == "near_aorta" else kidneys
        assert "skeleton" in rel + " ".join(touches) and set(touches) & ({target} if isinstance(target, str)
                                                                           else target), (rel, touches)
    assert all(rel == "inside:brain" for _, rel, _ in placed(painted, "brain", 4))
    pleural = placed(painted, "pleural", 6)
    assert pleural and all("lungs" in rel or "lungs" in touches for _, rel, touches in pleural)


def test_relation_inside_abutting_none():
    organs = np.zeros((9, 9, 9), np.uint8)
    organs[:, :, :4] = ORGAN_IDS["liver"]
    blob = np.zeros((9, 9, 9), np.float32)
    blob[3:6, 3:6, 1:4] = 1.0
    assert relation(blob, organs) == ("inside:liver", [])
    assert relation(np.roll(blob, 3, axis=2), organs) == ("abutting:liver", ["liver"])
    assert relation(np.roll(blob, 5, axis=2), organs) == ("none", [])


def mass_centre_mm(weights, affine):
    """Weighted centre of ``weights`` ``(X, Y, Z)`` in world mm."""
    index = np.argwhere(weights > 0)
    centre = np.average(index, axis=0, weights=weights[tuple(index.T)])
    return affine[:3, :3] @ centre + affine[:3, 3]


def z_offset(still, moved, region, shift_xy):
    """The z shift (mm) that, with the in-plane ``shift_xy`` (mm), best maps the PET of ``still`` onto that
    of ``moved`` over the voxels of ``region`` (least squares, 0.5 mm steps)."""
    lo = np.maximum(np.argwhere(region).min(axis=0) - 6, 0)
    hi = np.argwhere(region).max(axis=0) + 7
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    voxel = np.diag(still.pet_affine)[:3]
    shifts = np.arange(-40.0, 40.5, 0.5)
    errors = [np.square(ndimage.shift(still.pet[box], np.array([*shift_xy, t]) / voxel, order=1, mode="nearest")
                        - moved.pet[box])[region[box]].sum() for t in shifts]
    return float(shifts[int(np.argmin(errors))])


def near(pc, name, grow=3):
    return ndimage.binary_dilation(pc.organs == ORGAN_IDS[name], iterations=grow)


def test_misregistration_moves_pet_and_lesions_not_organs(still):
    moved = generate_case(seed_with_every_source(), spacing=SPACING, noise=False, misregistration=2.0)
    record = moved.params["misregistration"]
    field = Misregistration(tuple(record["shift_xyz_mm"]), record["breathing_mm"], tuple(record["breathing_z_mm"]),
                            record["half_width_mm"], record["back_y_mm"])
    assert record["scale"] == 2.0 and abs(record["breathing_mm"]) >= 8.0 and still.params["misregistration"][
        "breathing_mm"] == 0.0
    np.testing.assert_array_equal(moved.organs, still.organs)  # the organ map stays with the CT
    np.testing.assert_array_equal(moved.ct, still.ct)
    # The bladder lies below the breathing region: its uptake moves by the rigid shift alone.
    box = near(still, "urinary_bladder")
    offset = mass_centre_mm(moved.pet * box, moved.pet_affine) - mass_centre_mm(still.pet * box, still.pet_affine)
    np.testing.assert_allclose(offset, record["shift_xyz_mm"], atol=1.5)
    # The kidneys breathe: their uptake moves along z by the shift plus the breathing there.
    for name in ("kidney_left", "kidney_right"):
        kidney = still.organs == ORGAN_IDS[name]
        world = (still.pet_affine[:3, :3] @ np.argwhere(kidney).T + still.pet_affine[:3, 3:4])
        expected = record["shift_xyz_mm"][2] + np.average(field.breathing(*world), weights=still.pet[kidney])
        measured = z_offset(still, moved, near(still, name, grow=1), record["shift_xyz_mm"][:2])
        assert abs(measured - expected) < 2.0, (name, measured, expected)
    # SEG follows the PET: each lesion's recorded centre moves with the displacement there and stays in
    # SEG, and the moved SEG covers the moved PET's lesions better than a CT-frame SEG does.
    for before, after in zip(still.lesion_info, moved.lesion_info):
        expected = (field.to_pet(before["centre_mm"]) - before["centre_mm"]) / SPACING
        assert np.abs(np.subtract(after["centre_zyx"], before["centre_zyx"])[::-1] - expected).max() <= 1.01
        assert moved.lesions[tuple(after["centre_zyx"][::-1])] == 1
    assert moved.pet[moved.lesions > 0].mean() >= moved.pet[still.lesions > 0].mean()


def test_manifest_records_and_cli_option(tmp_path):
    result = CliRunner().invoke(app, ["phantom", str(tmp_path / "c"), "--cases", "2", "--seed", "7", "--spacing",
                                      "12", "--negatives", "0.5", "--misregistration", "0.5", "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["generator"]["misregistration"] == 0.5 and manifest["organ_labels"]["21"] == "muscle"
    for entry in manifest["cases"]:
        assert entry["phantom"]["misregistration"]["scale"] == 0.5
        assert {s["kind"] for s in entry["uptake_sources"]} >= {"thyroid", "brown_fat", "muscle", "bowel_focal"}
        for source in entry["uptake_sources"]:
            assert source["organ"] is None or source["organ"] in ORGAN_IDS
            assert len(source["centre_zyx"]) == 3 and source["suv"] > 0
        assert entry["positive"] == bool(entry["lesion_list"])
        for lesion in entry["lesion_list"]:
            assert set(lesion) == LESION_KEYS
            assert re.fullmatch(r"inside:\w+|abutting:\w+|none", lesion["relation"])
            assert lesion["relation"].split(":")[-1] in {*ORGAN_IDS, "none"}
            assert lesion["volume_ml"] > 0 and lesion["contrast"] > 1.0
    bad = CliRunner().invoke(app, ["phantom", str(tmp_path / "d"), "--misregistration", "-1"])
    assert bad.exit_code == 2 and not (tmp_path / "d").exists()


def test_same_seed_same_records():
    a, b = (generate_case([8, 2], spacing=12.0) for _ in range(2))
    assert a.lesion_info == b.lesion_info and a.uptake_sources == b.uptake_sources and a.params == b.params
    np.testing.assert_array_equal(a.pet, b.pet)
    np.testing.assert_array_equal(a.lesions, b.lesions)


def test_generate_cohort_checks_the_misregistration_scale(tmp_path):
    from anatoseg.errors import ConfigError

    with pytest.raises(ConfigError, match="misregistration"):
        generate_cohort(tmp_path / "x", misregistration=float("nan"), progress=False)


def test_subtract_on_a_block_equals_pointwise():
    from anatoseg.data.phantom.shapes import Capsule, Ellipsoid, Subtract

    grid = Grid((40, 30, 50), (2.0, 2.0, 3.0), (-40.0, -30.0, 0.0))
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = Ellipsoid(tuple(rng.uniform(-20, 20, 3) + [0, 0, 70]), tuple(rng.uniform(5, 40, 3)))
        b = Capsule(tuple(rng.uniform(-40, 40, 3) + [0, 0, 70]), tuple(rng.uniform(-40, 40, 3) + [0, 0, 70]),
                    rng.uniform(2, 15))
        slices, (x, y, z) = grid.block(a.lo, a.hi)
        pointwise = np.broadcast_to(a.contains(x, y, z), [s.stop - s.start for s in slices]) & ~b.contains(x, y, z)
        np.testing.assert_array_equal(Subtract(a, b).contains(x, y, z), pointwise)
