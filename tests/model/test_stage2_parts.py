"""Stage-2 parts: the per-modality masks, token visibility, reconstruction targets, losses, preprocessing check."""

import math

import pytest
import torch

from anatokernels import patchify, unpatchify
from anatoseg.errors import ConfigError
from anatoseg.stage2 import (
    check_pretrained_preprocessing,
    draw_masks,
    fill_masked,
    info_nce,
    masked_reconstruction_loss,
    near_pairs,
    normalised_targets,
    pet_targets,
    visible_tokens,
)

PATCH = (4, 4, 4)
PREPROCESSING = {"target_spacing": [3.0, 2.0, 2.0], "ct_clip": [-1000.0, 1500.0], "ct_mean": 40.0, "ct_std": 300.0,
                 "suv_clip": [0.0, 50.0], "suv_mean": 1.2, "suv_std": 2.5, "crop_margin_mm": 10.0}


def _partition(visible, masked, total):
    return torch.equal(torch.cat([visible, masked], 1).sort(1).values, torch.arange(total).expand(len(visible), -1))


@pytest.mark.parametrize("mode", ["independent", "complementary", "shared"])
def test_masks_partition_each_modality_and_relate_as_their_mode_says(mode):
    masks = draw_masks(64, (8, 8, 12), PATCH, 0.75, mode, generator=torch.Generator().manual_seed(0))
    again = draw_masks(64, (8, 8, 12), PATCH, 0.75, mode, generator=torch.Generator().manual_seed(0))
    (pet_visible, pet_masked), (ct_visible, ct_masked) = masks["pet"], masks["ct"]
    assert pet_masked.shape == ct_masked.shape == (64, 9) and pet_visible.shape == (64, 3)
    assert all(_partition(*masks[m], 12) for m in ("pet", "ct"))
    assert all(torch.equal(a, b) for m in masks for a, b in zip(masks[m], again[m]))  # reproducible
    shared = (pet_visible == ct_visible).all(1)
    overlap = (pet_visible[:, :, None] == ct_visible[:, None, :]).any(-1).any(-1)
    if mode == "shared":
        assert shared.all()
    elif mode == "complementary":
        assert not overlap.any()  # every patch one modality shows is hidden in the other
    else:  # independent: as often apart as chance says (P(no common visible patch) = C(9,3)/C(12,3) = 0.38)
        assert not shared.all() and 10 < int((~overlap).sum()) < 40


def test_mask_ratio_and_mode_are_checked():
    with pytest.raises(ConfigError, match="mask.mode must be one of independent, complementary, shared"):
        draw_masks(1, (8, 8, 8), PATCH, 0.5, "random")
    with pytest.raises(ConfigError, match="complementary masks need disjoint visible patches: mask.ratio 0.25 "
                                          "leaves 6 of 8 visible"):
        draw_masks(1, (8, 8, 8), PATCH, 0.25, "complementary")
    with pytest.raises(ConfigError, match="leaves 8 masked and 0 visible"):
        draw_masks(1, (8, 8, 8), PATCH, 0.99)


@pytest.mark.parametrize("stride", [2, 4, 8], ids=["stride2", "stride4", "stride8"])
def test_visible_tokens_are_the_positions_covered_by_visible_patches_only(stride):
    masked = torch.tensor([[1, 6]])  # patches (0, 0, 1) and (0, 1, 2) of the (2, 4, 4) grid of (8, 16, 16)
    voxels = torch.ones(1, 1, 8, 16, 16)
    hidden = unpatchify(patchify(voxels, PATCH).index_fill(1, masked[0], 0.0), PATCH, (8, 16, 16))
    expected = -torch.nn.functional.max_pool3d(-hidden, stride)[:, 0] == 1  # every voxel of the position shown
    shown = visible_tokens(masked, (8, 16, 16), PATCH, stride)
    assert shown.shape == expected.shape and torch.equal(shown, expected) and 0 < shown.sum() < shown.numel()


def test_reconstruction_counts_only_masked_patches():
    x = torch.randn(2, 1, 8, 8, 12)
    visible, masked = draw_masks(2, x.shape[2:], PATCH, 0.5)["ct"]
    target = normalised_targets(x, masked, PATCH, eps=1e-6)
    pred = torch.randn_like(x, requires_grad=True)
    loss = masked_reconstruction_loss(pred, target, masked, PATCH)
    loss.backward()
    changed = patchify(pred.detach(), PATCH)  # changing the prediction on visible patches changes nothing ...
    for b in range(2):
        changed[b, visible[b]] += 100.0
    changed = unpatchify(changed, PATCH, x.shape[2:])
    torch.testing.assert_close(masked_reconstruction_loss(changed, target, masked, PATCH), loss.detach())
    grads = patchify(pred.grad, PATCH)  # ... and visible voxels receive no gradient, while masked ones do
    for b in range(2):
        assert grads[b, visible[b]].abs().max() == 0 and grads[b, masked[b]].abs().min() > 0
    perfect = torch.zeros(2, 12, 64)  # a perfect prediction of the masked patches has zero loss
    for b in range(2):
        perfect[b, masked[b]] = target[b]
    assert masked_reconstruction_loss(unpatchify(perfect, PATCH, x.shape[2:]), target, masked, PATCH) == 0


def test_patch_targets_are_normalised_per_patch():
    x = 5.0 + 3.0 * torch.randn(1, 1, 8, 8, 8)
    _, masked = draw_masks(1, x.shape[2:], PATCH, 0.75)["pet"]
    target = normalised_targets(x, masked, PATCH, eps=1e-6)
    assert target.shape == (1, 6, 64)
    torch.testing.assert_close(target.mean(-1), torch.zeros(1, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.std(-1, unbiased=False), torch.ones(1, 6), atol=1e-4, rtol=0)
    torch.testing.assert_close(pet_targets(x, masked, PATCH, "patch", eps=1e-6), target)


def test_pet_targets_keep_absolute_suv():
    """A hot patch and the same patch at a tenth of the uptake: one per-patch target, two absolute ones."""
    mean, std = 1.2, 2.5
    suv = torch.rand(1, 1, 4, 4, 8) + 0.5
    suv[..., 4:] = 10.0 * suv[..., :4]  # patch 1 is patch 0 ten times hotter
    pet = (suv - mean) / std  # the normalised PET the network reads
    masked = torch.tensor([[0, 1]])
    patch = pet_targets(pet, masked, PATCH, "patch", eps=1e-6)
    torch.testing.assert_close(patch[0, 0], patch[0, 1], atol=1e-4, rtol=0)
    absolute = pet_targets(pet, masked, PATCH, "suv", eps=1e-6)
    torch.testing.assert_close(absolute, patchify(pet, PATCH))
    logs = pet_targets(pet, masked, PATCH, "log_suv", eps=1e-6, suv_norm=(mean, std))
    torch.testing.assert_close(logs, torch.log1p(patchify(suv, PATCH)))
    assert (absolute[0, 1] > absolute[0, 0]).all() and (logs[0, 1] > logs[0, 0]).all()
    with pytest.raises(ConfigError, match="log_suv needs the"):
        pet_targets(pet, masked, PATCH, "log_suv", eps=1e-6)


def test_mask_token_fills_masked_patches_and_gets_gradient():
    x = torch.randn(2, 1, 8, 8, 8, requires_grad=True)
    token = torch.tensor([7.0], requires_grad=True)
    visible, masked = draw_masks(2, x.shape[2:], PATCH, 0.75)["pet"]
    filled = fill_masked(x, visible, PATCH, token)
    patches, original = patchify(filled, PATCH), patchify(x.detach(), PATCH)
    for b in range(2):
        assert (patches[b, masked[b]] == 7.0).all()
        assert torch.equal(patches[b, visible[b]], original[b, visible[b]])
    filled.sum().backward()
    assert token.grad.item() == masked.numel() * 64


def test_info_nce_lower_for_aligned_than_shuffled_tokens_and_excluded_pairs_are_no_negatives():
    a = torch.randn(32, 16)
    b = a + 0.1 * torch.randn(32, 16)
    aligned = info_nce(a, b, temperature=0.1)
    shuffled = info_nce(a, b[torch.randperm(32)], temperature=0.1)
    assert aligned < 0.1 < shuffled
    torch.testing.assert_close(info_nce(torch.ones(8, 4), torch.ones(8, 4), 0.5),  # uninformative: log N
                               torch.tensor(math.log(8.0)))
    exclude = torch.ones(8, 8, dtype=torch.bool).triu(1) | torch.ones(8, 8, dtype=torch.bool).tril(-1)
    exclude[:, :2] = exclude[:2, :] = False  # tokens 0 and 1 keep every candidate, the others 0, 1 and themselves
    kept = torch.tensor([8.0] * 2 + [3.0] * 6)  # candidates per row (a->b) and per column (b->a)
    torch.testing.assert_close(info_nce(torch.ones(8, 4), torch.ones(8, 4), 0.5, exclude), kept.log().mean())


def test_near_pairs_are_same_sample_neighbours_within_the_radius():
    positions = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1], [0, 3, 0, 0], [1, 0, 0, 1]])
    near = near_pairs(positions, 1.5)
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[0, 1] = expected[1, 0] = expected[1, 2] = expected[2, 1] = True  # distances 1 and sqrt(2)
    assert torch.equal(near, expected)
    assert not near_pairs(positions, 0.0).any()


def test_preprocessing_check_names_each_difference():
    stage3 = {**PREPROCESSING, "target_spacing": (3.0, 2.0, 2.0), "ct_clip": (-1000.0, 1500.0)}
    assert check_pretrained_preprocessing({"preprocessing": PREPROCESSING}, stage3) == []
    almost = {**stage3, "suv_std": 2.5 * (1 + 1e-4)}
    assert check_pretrained_preprocessing({"preprocessing": PREPROCESSING}, almost) == []
    other = {**stage3, "target_spacing": (2.0, 2.0, 2.0), "suv_std": 3.0}
    del other["crop_margin_mm"]
    assert check_pretrained_preprocessing({"preprocessing": PREPROCESSING}, other) == [
        "target spacing (Z, Y, X mm): [3, 2, 2] in stage 2, [2, 2, 2] here",
        "SUV std: 2.5 in stage 2, 3 here",
        "body-crop margin (mm): 10 in stage 2, not recorded here"]
    assert check_pretrained_preprocessing({"preprocessing": None}, stage3) == [
        "the stage-2 checkpoint records no preprocessing (pretrained on volumes given directly); its inputs "
        "cannot be checked against stage 3's"]
    with pytest.raises(TypeError, match="stage3_preprocessing must be a dict, got list"):
        check_pretrained_preprocessing({"preprocessing": PREPROCESSING}, [])
