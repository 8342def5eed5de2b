"""A one-page PNG of a PET/CT case: PET MIPs, lesion overlays, a CT slice and organ outlines.

Panels, left to right:

1. PET maximum-intensity projection, coronal (patient's right on the left), inverted grey, SUV 0-7;
2. the same, sagittal (anterior on the left);
3. a coronal CT slice (soft-tissue window, -160..240 HU) through the largest
   ground-truth lesion (else the largest predicted one, else the body's centre).

Ground truth is drawn in green (filled, translucent, with its outline),
prediction as magenta outlines; on the MIPs these are projections. Organ label
outlines (thin, one colour per organ from a palette that leaves out the
ground-truth and prediction hues, :mod:`anatoseg.viz.colours`; legend on the right) appear when organ
labels exist: projected on the MIPs (except the skeleton) and cut on the CT
slice. Arrays are ``(Z, Y, X)`` as :func:`~anatoseg.data.case.load_case` gives them
(RAS+ axes, reversed); the panels use the
voxel spacing for their mm axes (a rotation in the affine is ignored for
display). Rendering uses matplotlib's Agg canvas and no pyplot state; the
file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from anatoseg.data.atomic import atomic_path
from anatoseg.data.case import Case
from anatoseg.data.labels import ORGANS
from anatoseg.data.nifti import spacing_of
from anatoseg.metrics.components import component_sizes, components
from anatoseg.viz.colours import GT_COLOUR, PRED_COLOUR, organ_colour

SUV_MAX = 7.0
CT_WINDOW = (-160.0, 240.0)


def _slice_y(lesions, pred, pet) -> int:
    """y index for the CT slice: centroid of the largest GT (else predicted) lesion, else the PET's centre."""
    for mask in (lesions, pred):
        if mask is not None and np.any(mask):
            labels, n = components(np.asarray(mask) > 0)
            largest = labels == int(np.argmax(component_sizes(labels, n))) + 1
            return int(round(np.nonzero(largest)[1].mean()))
    profile = np.asarray(pet).sum(axis=(0, 2))
    return int(round((profile * np.arange(profile.size)).sum() / max(profile.sum(), 1e-6)))


def _panel(ax, image, extent, cmap, vmin, vmax, title):
    """``image``: ``(Z, H)`` with Z upwards (``origin="lower"``); the horizontal axis is drawn mirrored."""
    ax.imshow(image, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.invert_xaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _outline(ax, mask2d, extent, colour, *, fill=False, width=1.2):
    """Outline (and fill) of ``mask2d`` ``(Z, H)`` on a panel of :func:`_panel`."""
    if not mask2d.any():
        return
    x = extent[0] + (np.arange(mask2d.shape[1]) + 0.5) * (extent[1] - extent[0]) / mask2d.shape[1]
    z = extent[2] + (np.arange(mask2d.shape[0]) + 0.5) * (extent[3] - extent[2]) / mask2d.shape[0]
    data = mask2d.astype(np.float32)
    if fill:
        ax.contourf(x, z, data, levels=[0.5, 1.5], colors=[colour], alpha=0.35)
    ax.contour(x, z, data, levels=[0.5], colors=[colour], linewidths=width)


def _organ_overlays(views, organs: np.ndarray) -> list:
    """Outline every organ present in ``organs`` (Z, Y, X) on each view; return their legend entries."""
    organs = np.asarray(organs)
    present = np.flatnonzero(np.bincount(organs.ravel(), minlength=len(ORGANS) + 1))
    legend = []
    for organ in ORGANS:
        if organ.id not in present:
            continue
        mask = organs == organ.id
        for ax, axis, extent, index in views:
            if axis is not None and organ.name == "skeleton":
                continue  # a projected skeleton outline hides everything else
            plane = mask.any(axis=axis) if axis is not None else mask[:, index, :]
            _outline(ax, plane, extent, organ_colour(organ.id, len(ORGANS)), width=0.6)
        legend.append(Line2D([], [], color=organ_colour(organ.id, len(ORGANS)), lw=2,
                             label=f"{organ.id} {organ.name}"))
    return legend


def render_png(out: str | os.PathLike, pet: np.ndarray, affine: np.ndarray, *, ct: np.ndarray | None = None,
               lesions: np.ndarray | None = None, pred: np.ndarray | None = None, organs: np.ndarray | None = None,
               title: str = "", dpi: int = 100) -> Path:
    """Render the viewer page (module docstring) to ``out`` (PNG) and return its path.

    ``pet``: ``(Z, Y, X)`` SUV; ``ct``: ``(Z, Y, X)`` HU on the same grid (panel 3
    is left out without it); ``lesions``, ``pred``: ``(Z, Y, X)`` masks; ``organs``:
    ``(Z, Y, X)`` organ ids; ``affine``: ``(4, 4)``, used for the voxel spacing.
    """
    pet = np.asarray(pet, dtype=np.float32)
    sz, sy, sx = spacing_of(affine)
    nz, ny, nx = pet.shape
    coronal = (0.0, nx * sx, 0.0, nz * sz)
    sagittal = (0.0, ny * sy, 0.0, nz * sz)
    widths = [nx * sx, ny * sy] + ([nx * sx] if ct is not None else [])
    height_in = 9.0
    width_in = height_in * sum(widths) / (nz * sz) + (2.2 if organs is not None else 0.4)
    fig = Figure(figsize=(max(width_in, 6.0), height_in + 0.6), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, len(widths) + 1, width_ratios=widths + [sum(widths) * 0.18],
                            left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.03)
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(widths))]
    _panel(axes[0], pet.max(axis=1), coronal, "gray_r", 0.0, SUV_MAX, "PET MIP coronal (SUV 0-7)")
    _panel(axes[1], pet.max(axis=2), sagittal, "gray_r", 0.0, SUV_MAX, "PET MIP sagittal")
    y = _slice_y(lesions, pred, pet)
    if ct is not None:
        _panel(axes[2], np.asarray(ct[:, y, :], dtype=np.float32), coronal, "gray", *CT_WINDOW,
               f"CT coronal, y = {y} ({y * sy:.0f} mm)")
    views = [(axes[0], 1, coronal, None), (axes[1], 2, sagittal, None)]
    if ct is not None:
        views.append((axes[2], None, coronal, y))
    legend = _organ_overlays(views, organs) if organs is not None else []
    for mask, colour, fill, label in ((lesions, GT_COLOUR, True, "lesion (ground truth, filled)"),
                                      (pred, PRED_COLOUR, False, "prediction (outline)")):
        if mask is None:
            continue
        mask = np.asarray(mask) > 0
        for ax, axis, extent, index in views:
            plane = mask.any(axis=axis) if axis is not None else mask[:, index, :]
            _outline(ax, plane, extent, colour, fill=fill, width=1.2 if fill else 1.8)
        legend.insert(0, Line2D([], [], color=colour, lw=3, label=label))
    key = fig.add_subplot(grid[0, -1])
    key.axis("off")
    if legend:
        key.legend(handles=legend, loc="upper left", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(out)


def render_case(case: Case, out: str | os.PathLike, *, pred: np.ndarray | None = None) -> Path:
    """:func:`render_png` for a :class:`~anatoseg.data.case.Case` (title: id, lesion count and volume)."""
    title = case.case_id
    if case.lesions is not None:
        _, n = components(np.asarray(case.lesions) > 0)
        volume = float(np.count_nonzero(case.lesions)) * case.voxel_volume_ml
        title += f"  |  {n} lesion{'s' if n != 1 else ''}, {volume:.1f} ml"
    if pred is not None:
        title += f"  |  prediction {float(np.count_nonzero(pred)) * case.voxel_volume_ml:.1f} ml"
    return render_png(out, case.pet, case.affine, ct=case.ct, lesions=case.lesions, pred=pred, organs=case.organs,
                      title=title)
