"""Stage 2 has no mask shortcut: the trained PET and CT latents cannot be matched by mask layout.

The diagnostic of issue 18. A tiny model is pretrained with the default config (the real loop) on
content-free inputs: PET and CT are independent noise, so nothing but the masks and the position in
the crop relates them. It is then evaluated on fresh content-free batches, once with one mask shared
by PET and CT and once with independent masks. The score is a position-matched InfoNCE: a PET latent
must pick the CT latent of its own sample among the CT latents at the *same position* of every sample
of the batch, so position cannot help and only a mask fingerprint could; its gain over chance
(``log`` of the number of candidates, in nats) is ~0 without a shortcut. Anchors and candidates are
the positions the alignment term reads (visible in both views).

Checked once against the pre-issue-18 loss (``mask.mode=shared`` and InfoNCE over every token, masked
ones included, patched into this model; anchors and candidates then every position): the gain under
shared masks exceeded the gain under independent masks by 0.59, 1.28 and 1.04 nats (seeds 0-2, standard
errors 0.014-0.025), so this test failed it by 40+ standard errors. The default design: -0.008 ± 0.023,
0.011 ± 0.016, -0.014 ± 0.017. The test allows 3 standard errors.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anatoseg.stage2 import PretrainConfig, PretrainModel, draw_masks, pretrain_volumes, visible_tokens
from anatoseg.training.sampling import TrainVolume

SMALL_NET = {"widths": [4, 8], "stem_width": 4, "res_depths": [1, 1], "mamba_depths": [0, 1], "d_state": 4,
             "hcca_stages": [1], "num_heads": 2, "prompt_dim": 8, "hyper_hidden": 8, "rank": 2}
CROP, PATCH, RATIO = (16, 16, 16), (4, 4, 4), 0.7

pytestmark = pytest.mark.usefixtures("one_thread")


def content_free_run(out, steps: int = 60, seed: int = 0, **mask) -> PretrainModel:
    """The default objective, pretrained briefly on volumes whose PET and CT are independent noise."""
    rng = np.random.default_rng(seed)
    volumes = [TrainVolume(f"noise{i}", rng.normal(size=(2, 32, 32, 32)).astype(np.float32),
                           np.zeros((32, 32, 32), np.uint8)) for i in range(16)]
    config = PretrainConfig.from_dict({
        "model": {"net": SMALL_NET}, "crop": {"size": CROP}, "mask": {"patch_size": PATCH, "ratio": RATIO, **mask},
        "augment": {"flip_prob": 0.0, "affine_prob": 0.0, "intensity_prob": 0.0}, "loss": {"align_radius": 4.0},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "schedule": "constant"},
        "train": {"steps": steps, "batch_size": 4, "log_every": steps}, "seed": seed})
    return pretrain_volumes(config, volumes, out, progress=False).model.eval()


def aligned_positions(model: PretrainModel, masks) -> torch.Tensor:
    """(B, T) bool: the positions the alignment term reads, those visible in both views."""
    pet, ct = (visible_tokens(masks[m][1], CROP, PATCH, model.stride).flatten(1) for m in ("pet", "ct"))
    return pet & ct


def matched_gains(model: PretrainModel, mode: str, *, batch: int = 64, seed: int = 1000,
                  positions=aligned_positions) -> list[float]:
    """Per anchor: ``log(candidates) - cross-entropy`` of picking its own sample's CT latent among the CT
    latents at the same position of every sample, on one content-free batch masked as ``mode`` says.
    Anchors and candidates: the ``positions(model, masks)`` that the alignment term reads."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, *CROP, generator=generator)
    masks = draw_masks(batch, CROP, PATCH, RATIO, mode, generator=generator)
    with torch.no_grad():
        latents = model.latents(x[:, :1], x[:, 1:], masks)
    pet, ct = (F.normalize(latents[m].flatten(2), dim=1) for m in ("pet", "ct"))  # (B, D, T)
    read = positions(model, masks)
    gains = []
    for position in range(pet.shape[2]):
        samples = read[:, position].nonzero()[:, 0]
        if len(samples) < 2:
            continue
        logits = pet[samples, :, position] @ ct[samples, :, position].T / model.objective.temperature
        chance = math.log(len(samples))
        gains += (chance - F.cross_entropy(logits, torch.arange(len(samples)), reduction="none")).tolist()
    return gains


def shortcut_gap(model: PretrainModel, positions=aligned_positions) -> tuple[float, float]:
    """(mean gain with shared masks - mean gain with independent masks, its standard error)."""
    shared, independent = (np.array(matched_gains(model, mode, positions=positions))
                           for mode in ("shared", "independent"))
    error = math.sqrt(shared.var(ddof=1) / len(shared) + independent.var(ddof=1) / len(independent))
    return float(shared.mean() - independent.mean()), error


def mask_fingerprint(pet, ct, masks) -> dict[str, torch.Tensor]:
    """Latents that are nothing but a mask fingerprint: which of the 3×3×3 patches around a position are hidden."""
    offsets = torch.eye(27).view(27, 1, 3, 3, 3)  # one filter per neighbour
    return {m: F.conv3d((~visible_tokens(masks[m][1], CROP, PATCH, PATCH[0]))[:, None].float(), offsets, padding=1)
            for m in masks}


def test_the_diagnostic_finds_a_mask_fingerprint():
    """Its power: latents that encode only the mask layout are matched under shared masks, not independent ones."""
    fingerprint = SimpleNamespace(latents=mask_fingerprint, stride=PATCH[0], objective=SimpleNamespace(temperature=0.1))
    gap, error = shortcut_gap(fingerprint)
    assert gap > 1.0 and gap > 10 * error


def test_the_alignment_cannot_match_pet_to_ct_by_mask_layout(tmp_path):
    model = content_free_run(tmp_path)
    gap, error = shortcut_gap(model)
    assert gap < 3 * error, f"shared masks gain {gap:.3f} nats more than independent ones (SE {error:.3f})"
