"""Stage 1: teacher-student organ pseudo-labels for the PET-CT set (``anato pseudolabel``).

1. **Teacher.** A small residual 3D UNet (:class:`~anatoseg.stage1.net.OrganUNet`)
   is trained on a labelled CT organ set (source domain: TotalSegmentator format,
   or the phantom's ``--domain diagnostic``), CT only, plus body-frame coordinate
   channels (:mod:`.inputs`), with organ-centred patches and contrast-removal augmentation.
   Or no teacher is trained and organ predictions made elsewhere on the target
   CTs (e.g. TotalSegmentator) are read instead (:mod:`.external`).
2. **Pseudo-labels.** The teacher labels the CTs of the PET-CT set (target
   domain: other noise, resolution and contrast) and gives each voxel a
   confidence, its softmax probability.
3. **Student.** Starts from the teacher's weights, reads CT + PET (PET weights
   start at zero), and is trained on batches mixing the labelled source cases
   (``student.source_fraction``) with target pseudo-labels whose confidence passes
   the class-balanced thresholds (:mod:`.filtering`; other voxels are ignored), on
   strongly augmented patches, with an EMA mean-teacher consistency loss;
   ``student.rounds`` > 1 relabels the target with the student and trains again.
4. **Output.** The student (its mean-teacher, i.e. EMA, weights) labels every
   target case; label maps go on the PET grid with per-organ confidence JSON
   files, and the model is saved for ``anato predict`` (:func:`predict_organs`).
   With ground-truth organs, the report gives the organ Dice of teacher and
   student on the target domain.

Everything runs on a working grid (default 4 mm) cropped to the body;
inference uses sliding windows of the training patch size.
The entry is :func:`anatoseg.stage1.run.run_pseudolabel`; the two training loops are
:mod:`.loop`. Public API: :func:`run_pseudolabel`, :func:`load_organ_model`,
:func:`predict_organs`, :class:`Stage1Config`, :func:`build_config`.
"""

from anatoseg.stage1.config import Stage1Config, build_config
from anatoseg.stage1.model import OrganModel, load_organ_model, predict_organs, save_organ_model
from anatoseg.stage1.run import report_text, run_pseudolabel

__all__ = ["OrganModel", "Stage1Config", "build_config", "load_organ_model", "predict_organs", "report_text",
           "run_pseudolabel", "save_organ_model"]
