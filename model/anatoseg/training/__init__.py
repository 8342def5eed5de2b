"""The training core every stage (1, 2, 3) builds on.

- :mod:`.device`: the device choice and the mixed-precision (bf16 autocast) policy;
- :mod:`.rng`: seeding, and capture/restore of every global RNG (exact resume);
- :mod:`.optim`: Dice + CE loss (deep supervision on soft targets), AdamW/SGD with per-architecture rates and a
  slower group for pretrained encoders, the schedule and the optimiser step;
- :mod:`.log`: the run log (CSV, progress bar, TensorBoard when installed);
- :mod:`.fingerprint`: the dataset fingerprint file and the preprocessing it gives;
- :mod:`.run_folder`: the config copy and case-cache names of a run folder;
- :mod:`.cache`: train/validation split and the preprocessed-case cache;
- :mod:`.sampling`: lesion-centred, hard-negative (:mod:`.hard_negatives`) and random patches, augmented by
  :mod:`.augment` (nnU-Net's transforms, left-right flips that swap organ labels, PET-CT misregistration), organ
  prompts corrupted by :mod:`.organ_corruption` (dropped, dilated/eroded, shifted organs);
- :mod:`.network`: the segmentation network of a run config and its checkpoint description;
- :mod:`.distributed`: DDP under torchrun.
"""
