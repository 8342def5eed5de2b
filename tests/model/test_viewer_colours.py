"""Viewer colours: ground truth, prediction and every organ outline are told apart at a glance, and
``anato view`` accepts a case folder as well as its study folder; ``-h`` is ``--help`` everywhere."""

import itertools

import pytest
from matplotlib import image as mpimg
from matplotlib.colors import to_rgb
from typer.testing import CliRunner

from anatoseg.cli import app
from anatoseg.data.labels import ORGANS
from anatoseg.viz.colours import (
    GT_COLOUR,
    MIN_DELTA_E,
    MIN_DELTA_E_LESION,
    MIN_HUE_DEGREES,
    PRED_COLOUR,
    delta_e,
    hue_distance,
    organ_colour,
    rgb_to_lab,
)

COMMANDS = ["backends", "demo", "evaluate", "phantom", "predict", "pretrain", "pseudolabel", "train", "view"]


def legend_colours():
    return {"ground truth": to_rgb(GT_COLOUR), "prediction": to_rgb(PRED_COLOUR),
            **{organ.name: organ_colour(organ.id, len(ORGANS)) for organ in ORGANS}}


def test_lab_of_reference_colours():
    assert rgb_to_lab((1.0, 1.0, 1.0)) == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    assert rgb_to_lab((1.0, 0.0, 0.0)) == pytest.approx([53.24, 80.09, 67.20], abs=0.1)


def test_legend_colours_are_pairwise_distinct():
    colours = legend_colours()
    assert len(set(colours.values())) == len(colours)
    worst = min(((delta_e(a, b), na, nb) for (na, a), (nb, b) in itertools.combinations(colours.items(), 2)))
    assert worst[0] >= MIN_DELTA_E, f"{worst[1]} and {worst[2]} are only {worst[0]:.1f} ΔE apart"
    for organ in ORGANS:  # the old clash: prediction red = right kidney, lesion green = spleen
        colour = organ_colour(organ.id, len(ORGANS))
        assert min(delta_e(colour, GT_COLOUR), delta_e(colour, PRED_COLOUR)) >= MIN_DELTA_E_LESION, organ.name
        assert min(hue_distance(colour, GT_COLOUR), hue_distance(colour, PRED_COLOUR)) >= MIN_HUE_DEGREES, organ.name


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_short_help_option(command):
    args = [command] if command else []
    short, long = (CliRunner().invoke(app, args + [flag]) for flag in ("-h", "--help"))
    assert short.exit_code == 0 and short.output == long.output and "Usage" in short.output


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    pytest.importorskip("nibabel")
    from anatoseg.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, cases=1, seed=3, spacing=12.0, progress=False)
    return root


@pytest.mark.parametrize("level", ["case", "study"])
def test_view_accepts_case_and_study_folder(cohort, tmp_path, level):
    (case,) = [p for p in cohort.iterdir() if p.is_dir()]
    target = case if level == "case" else case / "study"
    result = CliRunner().invoke(app, ["view", str(target), "--out", str(tmp_path / "page.png")])
    assert result.exit_code == 0, result.output
    assert mpimg.imread(tmp_path / "page.png").shape[0] > 500


def test_view_names_the_studies_of_a_case_folder_with_several(cohort, tmp_path):
    import shutil

    (case,) = [p for p in cohort.iterdir() if p.is_dir()]
    two = tmp_path / "two"
    shutil.copytree(case / "study", two / "a")
    shutil.copytree(case / "study", two / "b")
    result = CliRunner().invoke(app, ["view", str(two), "--out", str(tmp_path / "page.png")])
    assert result.exit_code != 0 and "2 studies (a, b)" in str(result.exception)
