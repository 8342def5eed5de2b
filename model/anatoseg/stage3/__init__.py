"""Stage 3, lesion segmentation (``anato train``): :func:`anatoseg.stage3.run.run_train`.

- :mod:`.run`: the entry: cases, fingerprint, config resolution, then :func:`.loop.train`;
- :mod:`.loop`: the training loop, checkpoints and exact resume;
- :mod:`.validate`: sliding-window validation Dice.

What every stage shares (case cache, patches, optimiser and schedule, DDP, RNG state, run log,
network building) lives in :mod:`anatoseg.training`.
"""
