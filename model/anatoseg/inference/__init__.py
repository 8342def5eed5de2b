"""Whole-body inference (``anato predict``).

- :mod:`.sliding_window`: Gaussian-blended sliding windows accumulated in float16 on the CPU;
- :mod:`.predict`: :class:`~.predict.Predictor` (checkpoint -> masks on the original PET grid)
  and :func:`~.predict.predict_cases` (one case or a dataset).
"""
