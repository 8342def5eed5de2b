"""The viewer PNG: PET MIPs, CT slice, lesion and organ overlays."""

import pytest

pytest.importorskip("nibabel")

import numpy as np  # noqa: E402
from matplotlib import image as mpimg  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from anatoseg.data.phantom import generate_case  # noqa: E402
from anatoseg.viz import render_case, render_png  # noqa: E402
from anatoseg.viz.colours import GT_COLOUR, PRED_COLOUR  # noqa: E402


@pytest.fixture(scope="module")
def case():
    return generate_case([5, 0], spacing=8.0).to_case()


def colour_pixels(png, rgb, tol=0.12):
    pixels = mpimg.imread(png)[..., :3]
    return int(np.all(np.abs(pixels - np.array(rgb)) < tol, axis=-1).sum())


GREEN = to_rgb(GT_COLOUR)
RED = to_rgb(PRED_COLOUR)  # the prediction's colour (magenta)


def test_case_page_has_panels_and_overlays(case, tmp_path):
    pred = np.roll(case.lesions, 2, axis=2)
    out = render_case(case, tmp_path / "page.png", pred=pred)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.png"]
    pixels = mpimg.imread(out)
    assert pixels.shape[0] > 500 and pixels.shape[1] > pixels.shape[0]  # three panels side by side
    grey = pixels[..., :3].mean(axis=-1)
    assert (grey < 0.2).mean() > 0.05 and (grey > 0.9).mean() > 0.1  # dark CT air, white MIP background


def test_lesion_overlays_are_drawn_in_their_colours(case, tmp_path):
    bare = render_png(tmp_path / "bare.png", case.pet, case.affine, ct=case.ct)
    marked = render_png(tmp_path / "marked.png", case.pet, case.affine, ct=case.ct, lesions=case.lesions,
                        pred=np.roll(case.lesions, 3, axis=0))
    assert colour_pixels(marked, GREEN) > colour_pixels(bare, GREEN) + 20
    assert colour_pixels(marked, RED) > colour_pixels(bare, RED) + 20


def test_pet_only_page(case, tmp_path):
    out = render_png(tmp_path / "pet.png", case.pet, case.affine, title="PET only")
    pixels = mpimg.imread(out)
    assert pixels.shape[1] < mpimg.imread(render_case(case, tmp_path / "full.png")).shape[1]
