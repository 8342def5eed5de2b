"""Stage 3 training (``anato train``): :func:`anatoseg.train.run.run_train` and its parts.

- :mod:`.run`: cases, fingerprint, config resolution, then :func:`.loop.train`;
- :mod:`.loop`: the training loop, checkpoints and exact resume;
- :mod:`.data`: train/validation split and the preprocessed-case cache;
- :mod:`.sampling`: lesion-oversampled patches with MONAI augmentation;
- :mod:`.optim`: Dice + CE loss (deep supervision), AdamW/SGD and the schedule;
- :mod:`.validate`: sliding-window validation Dice;
- :mod:`.distributed`, :mod:`.rng`, :mod:`.log`, :mod:`.model`: DDP, RNG state, CSV/TensorBoard, network.
"""
