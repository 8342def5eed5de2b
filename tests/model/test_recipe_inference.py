"""Test-time mirroring (8 flips, organ prompts flipped and left/right swapped alike) and the organ-mask
post-processing of predicted lesion components."""

import numpy as np
import pytest
import torch

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.errors import ConfigError
from anatoseg.inference.mirror import FLIPS, flip_organs, mirrored
from anatoseg.inference.postprocess import suppress_in_organs
from anatoseg.inference.sliding_window import sliding_window_probability
from anatoseg.stage3.config import Config

pytestmark = pytest.mark.usefixtures("one_thread")

BRAIN, HEART, KIDNEY_L, KIDNEY_R = (ORGAN_IDS[n] for n in ("brain", "heart", "kidney_left", "kidney_right"))


class Pointwise(torch.nn.Module):
    """A 1×1×1 conv: mirror-symmetric by construction (a flip of the input flips the output)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 2, 1)
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, image, organs=None):
        return self.conv(image)


class Skewed(torch.nn.Module):
    """A 3×3×3 conv with random weights: not mirror-symmetric."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 2, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, image, organs=None):
        return self.conv(image)


class SidesAgree(torch.nn.Module):
    """Lesion logit +4 in a kidney whose name agrees with the half of the image (X) it lies in (left: low X),
    -4 where it does not: a view flipped along X without swapping the names contradicts it."""

    def forward(self, image, organs):
        low_x = torch.arange(organs.shape[-1]) < organs.shape[-1] // 2
        left, right = (organs == KIDNEY_L), (organs == KIDNEY_R)
        logit = 4.0 * ((left & low_x) | (right & ~low_x)).float() - 4.0 * ((left & ~low_x) | (right & low_x)).float()
        return torch.stack([torch.zeros_like(logit), logit], 1)


def test_mirroring_a_symmetric_model_changes_nothing_and_an_asymmetric_one_does():
    image = torch.randn(2, 20, 18, 22, generator=torch.Generator().manual_seed(1))
    for net, same in ((Pointwise(), True), (Skewed(), False)):
        plain = sliding_window_probability(net, image, (16, 16, 16), overlap=0.5).float()
        tta = sliding_window_probability(mirrored(net), image, (16, 16, 16), overlap=0.5).float()
        assert torch.allclose(plain, tta, atol=2e-3) == same
    assert len(FLIPS) == 8 and len(set(FLIPS)) == 8 and FLIPS[0] == ()


def test_mirrored_views_flip_image_and_organs_alike_and_swap_left_right():
    image = torch.randn(1, 2, 4, 6, 8)
    organs = torch.zeros(1, 4, 6, 8, dtype=torch.int64)
    organs[0, 1, 2, 1], organs[0, 2, 3, 6], organs[0, 0, 0, 0] = KIDNEY_L, KIDNEY_R, BRAIN
    seen = []

    def recording(images, organ_batch):
        seen.append((images, organ_batch))
        return torch.zeros(images.shape[0], 2, *images.shape[2:])

    mirrored(recording)(image, organs)
    assert len(seen) == 8
    for axes, (images, organ_batch) in zip(FLIPS, seen, strict=True):
        assert torch.equal(images, image.flip([a + 2 for a in axes]))
        expected = organs.flip([a + 1 for a in axes])
        if 2 in axes:  # X flipped: the kidney now on the left is named left
            renamed = torch.where(expected == KIDNEY_R, KIDNEY_L, expected)
            expected = torch.where(expected == KIDNEY_L, KIDNEY_R, renamed)
        assert torch.equal(organ_batch, expected) and torch.equal(flip_organs(organs, axes), expected)
    # Organ names follow the sides in every view, so a network that reads them with the side agrees with itself.
    plain = torch.softmax(SidesAgree()(image, organs), 1)
    assert plain[0, 1, 1, 2, 1] > 0.98 and plain[0, 1, 2, 3, 6] > 0.98
    assert torch.allclose(torch.exp(mirrored(SidesAgree())(image, organs)), plain, atol=1e-6)


def _components_case():
    mask = np.zeros((12, 12, 12), np.uint8)
    organs = np.zeros_like(mask)
    organs[0:6, 0:6, 0:6] = BRAIN
    organs[6:12, 6:12, 6:12] = HEART
    mask[1:4, 1:4, 1:4] = 1  # all inside the brain: removed
    mask[4:8, 7:9, 7:9] = 1  # 16 voxels, half of them in the heart (z 6, 7): not more than half, kept
    mask[5:8, 1:3, 9:11] = 1  # outside every organ: kept
    mask[9:11, 9:11, 9:11] = 1  # inside the heart: removed only when the heart is chosen
    mask[11, 11, 11] = 1  # a corner neighbour of the last one outside the heart: its own component (18-connected)
    organs[11, 11, 11] = 0
    return mask, organs


def test_post_processing_removes_components_mostly_inside_chosen_organs():
    mask, organs = _components_case()
    out = suppress_in_organs(mask, organs, (BRAIN, HEART))
    assert out.dtype == np.uint8
    assert not out[1:4, 1:4, 1:4].any() and not out[9:11, 9:11, 9:11].any() and out[11, 11, 11] == 1
    assert out[4:8, 7:9, 7:9].all() and out[5:8, 1:3, 9:11].all()
    brain_only = suppress_in_organs(mask, organs, (BRAIN,))
    assert brain_only[9:11, 9:11, 9:11].all() and not brain_only[1:4, 1:4, 1:4].any()
    assert suppress_in_organs(mask, organs, (BRAIN, HEART), fraction=0.4)[4:8, 7:9, 7:9].sum() == 0  # 50 % > 40 %
    np.testing.assert_array_equal(suppress_in_organs(mask, organs, ()), mask)
    with pytest.raises(ValueError, match="differ in shape"):
        suppress_in_organs(mask, organs[1:], (BRAIN,))


def test_inference_settings_are_validated():
    config = Config.build(overrides=["infer.suppress_organs=brain,heart", "infer.mirror=false"])
    assert config.infer.suppress_organs == "brain,heart" and config.infer.mirror is False
    assert Config().infer.mirror is True and Config().infer.suppress_organs == ""
    with pytest.raises(ConfigError, match="infer.suppress_organs: unknown organ name.*kidneys"):
        Config.build(overrides=["infer.suppress_organs=brain,kidneys"])
    with pytest.raises(ConfigError, match="infer.suppress_fraction"):
        Config.build(overrides=["infer.suppress_fraction=1"])
