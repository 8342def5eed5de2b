"""anatoseg: anatomy-guided, cross-modally pretrained whole-body PET-CT lesion segmentation.

Our reading of "Anatomy-guided prompting with cross-modal self-alignment"
(Medical Image Analysis 110, 2026), built on the ``anatokernels`` ops.
The command-line interface is ``anato`` (:mod:`anatoseg.cli`).
"""

__version__ = "0.1.0"
