"""The training core every stage (1, 2, 3) builds on.

- :mod:`.cache`: train/validation split and the preprocessed-case cache;
- :mod:`.sampling`: lesion-oversampled patches with MONAI augmentation;
- :mod:`.optim`: Dice + CE loss (deep supervision), AdamW/SGD and the schedule;
- :mod:`.network`: the segmentation network of a run config and its checkpoint description;
- :mod:`.distributed`: DDP under torchrun and device choice;
- :mod:`.rng`: capture/restore of every global RNG (exact resume);
- :mod:`.log`: the run log (CSV, TensorBoard when installed).
"""
