"""Overlay colours of the viewer page, chosen so that ground truth, prediction and organs cannot be confused.

* ground truth: bright green, **filled** (translucent) with its outline;
* prediction: magenta, **outlined** only (thicker line);
* organs: thin outlines, one colour per organ, from matplotlib's ``tab20``,
  ``tab20b`` and ``tab20c``, then (those give only 15 that pass) an sRGB grid of
  :data:`_GRID_LEVELS` levels per channel, with every colour left out that is near the ground-truth or prediction
  colour (CIE76 ΔE in CIELAB below :data:`MIN_DELTA_E_LESION`, or a hue angle within
  :data:`MIN_HUE_DEGREES` of theirs) or near an organ colour already taken
  (below :data:`MIN_DELTA_E`). ``tab20``'s red and green, which used to read as prediction and
  ground truth on the kidney and the spleen, are dropped that way.

Any two overlay colours differ by at least :data:`MIN_DELTA_E` (tested in
``tests/model/test_viewer_colours.py``).
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_rgb

GT_COLOUR, PRED_COLOUR = "#00d100", "#ff00dc"
MIN_DELTA_E = 20.0  # CIE76: ~2.3 is just noticeable, 20+ reads as a different colour at a glance
MIN_DELTA_E_LESION = 45.0  # organs stay further from the two lesion colours: a thin green or pink organ
#                            outline at 20-30 ΔE still read as ground truth or prediction on the rendered page
MIN_HUE_DEGREES = 40.0  # ... and away from their hues (CIELAB hue angle), for any organ colour with chroma:
#                        a light green still reads as "green" however far its lightness is
_GREY_CHROMA = 15.0  # below this chroma a colour has no hue to confuse
_PALETTES = ("tab20", "tab20b", "tab20c")
_GRID_LEVELS = 4  # the fallback candidates: 4**3 sRGB colours, 26 organ colours pass in all


def rgb_to_lab(rgb) -> np.ndarray:
    """CIELAB (D65) of sRGB colours ``(..., 3)`` in [0, 1] (or any matplotlib colour spec)."""
    rgb = np.asarray(to_rgb(rgb) if isinstance(rgb, str) else rgb, dtype=np.float64)[..., :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e(a, b) -> float:
    """CIE76 colour difference of two colours (Euclidean distance in CIELAB)."""
    return float(np.linalg.norm(rgb_to_lab(a) - rgb_to_lab(b)))


def hue_distance(a, b) -> float:
    """Angle in degrees between the CIELAB hues of two colours; 180 when either is nearly grey."""
    (_, a1, b1), (_, a2, b2) = rgb_to_lab(a), rgb_to_lab(b)
    if min(np.hypot(a1, b1), np.hypot(a2, b2)) < _GREY_CHROMA:
        return 180.0
    diff = abs(np.degrees(np.arctan2(b1, a1) - np.arctan2(b2, a2))) % 360.0
    return float(min(diff, 360.0 - diff))


@cache
def organ_palette(count: int) -> tuple[tuple[float, float, float], ...]:
    """``count`` organ colours (RGB), each at least :data:`MIN_DELTA_E_LESION` from GT and prediction and
    :data:`MIN_DELTA_E` from each other."""
    lesions = [to_rgb(GT_COLOUR), to_rgb(PRED_COLOUR)]
    chosen: list[tuple[float, float, float]] = []
    named = (tuple(float(c) for c in colour[:3]) for name in _PALETTES for colour in colormaps[name].colors)
    grid = (tuple(v / (_GRID_LEVELS - 1) for v in rgb) for rgb in itertools.product(range(_GRID_LEVELS), repeat=3))
    for colour in itertools.chain(named, grid):
        if (all(delta_e(colour, other) >= MIN_DELTA_E_LESION for other in lesions)
                and all(hue_distance(colour, other) >= MIN_HUE_DEGREES for other in lesions)
                and all(delta_e(colour, other) >= MIN_DELTA_E for other in chosen)):
            chosen.append(colour)
        if len(chosen) == count:
            return tuple(chosen)
    raise ValueError(f"only {len(chosen)} organ colours stay {MIN_DELTA_E} ΔE apart; {count} asked")


def organ_colour(organ_id: int, count: int) -> tuple[float, float, float]:
    """Colour of organ ``organ_id`` (1-based) among ``count`` organs."""
    return organ_palette(count)[(organ_id - 1) % count]
