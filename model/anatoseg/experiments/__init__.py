"""Experiment drivers that train and score many variants: :mod:`.protocol` (the experiment protocol:
variants x seeds on fixed phantom cohorts, paired statistics, ``results.md``), with its statistics
(:mod:`.stats`) and no-learning baseline (:mod:`.sanity`).

Run as ``python -m anatoseg.experiments.protocol OUT [--scale cpu|gpu] [--variants ...] [--seeds N]``.
"""
