"""Pictures of cases: the viewer page of ``anato view`` (:func:`render_case`, :func:`render_png`)."""

from anatoseg.viz.mip import render_case, render_png

__all__ = ["render_case", "render_png"]
