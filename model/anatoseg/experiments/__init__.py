"""Experiment drivers that train and score many variants: :mod:`.table` (the results table).

Run as ``python -m anatoseg.experiments.table OUT [options]``.
"""
