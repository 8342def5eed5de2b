"""The training recipe's patches: lesion / organ / hot / random shares, hard-negative centres, and the
augmentations (left-right flip swaps the organ labels, PET-CT misregistration, every draw from (seed, step))."""

import numpy as np
import pytest
import torch

from anatoseg.config import AugmentConfig
from anatoseg.data.labels import ORGAN_IDS
from anatoseg.errors import ConfigError
from anatoseg.stage3.config import Config
from anatoseg.training.augment import Augmentation, mirror, shift_channel
from anatoseg.training.hard_negatives import MAX_CANDIDATES, HardNegatives
from anatoseg.training.sampling import HardNegativeShares, PatchBatches, TrainVolume

pytestmark = pytest.mark.usefixtures("one_thread")

NO_AUGMENT = AugmentConfig(**{name: 0.0 for name in vars(AugmentConfig()) if name.endswith("_prob")})
BRAIN, KIDNEY_L, KIDNEY_R, LIVER = (ORGAN_IDS[n] for n in ("brain", "kidney_left", "kidney_right", "liver"))


def _volume(shape=(48, 40, 44), organs=True, lesions=True) -> TrainVolume:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    if lesions:
        label[5:8, 5:8, 5:8] = 1
        image[0, 5:8, 5:8, 5:8] += 50  # the lesion is hot ...
    image[0, 30:33, 30:33, 10:13] += 40  # ... and so is a spot outside it (physiological)
    organ_map = np.zeros(shape, np.uint8)
    organ_map[20:26, 2:6, 30:40] = BRAIN
    organ_map[40:44, 30:34, 2:4] = KIDNEY_L  # a small organ: drawn as often as the brain
    organ_map[0:20, 20:40, 20:44] = LIVER  # not listed: never a centre
    return TrainVolume("v", image, label, organ_map if organs else None)


def _batches(volume, batch_size=6, lesion=1 / 3, organ=0.25, hot=0.25, **kwargs) -> PatchBatches:
    hard = HardNegativeShares(organ, hot, (BRAIN, KIDNEY_L, KIDNEY_R), 0.999)
    return PatchBatches([volume], (16, 16, 16), batch_size=batch_size, lesion_fraction=lesion, augment=NO_AUGMENT,
                        seed=0, use_organs=volume.organs is not None, steps=10, hard_negatives=hard, **kwargs)


@pytest.mark.parametrize("batch_size", [1, 2, 6])
def test_shares_of_patch_kinds_over_many_draws(batch_size):
    batches = _batches(_volume(), batch_size=batch_size)
    kinds = [batches.kind(s, i, np.random.default_rng([0, s, i])) for s in range(6000 // batch_size)
             for i in range(batch_size)]
    share = {k: kinds.count(k) / len(kinds) for k in ("lesion", "organ", "hot", "random")}
    lesion = {1: 1 / 3, 2: 1 / 2, 6: 1 / 3}[batch_size]  # a batch of 2 holds one lesion patch (nnU-Net)
    assert share["lesion"] == pytest.approx(lesion, abs=0.03)
    rest = 1 - lesion  # organ and hot: a quarter each of the other patches (a sixth of all at 1/3 lesions)
    assert share["organ"] == pytest.approx(rest / 4, abs=0.03) and share["hot"] == pytest.approx(rest / 4, abs=0.03)
    assert share["random"] == pytest.approx(rest / 2, abs=0.03)


def test_lesion_warmup_centres_every_patch_on_a_lesion_then_the_shares_return():
    batches = _batches(_volume(), batch_size=6, lesion_warmup=3)
    kinds = [[batches.kind(s, i, np.random.default_rng([0, s, i])) for i in range(6)] for s in range(8)]
    assert all(k == "lesion" for step in kinds[:3] for k in step)
    assert all(step.count("lesion") == 2 for step in kinds[3:])  # 1/3 of a batch of 6 afterwards
    label = batches[0]["label"]
    assert all(label[i].any() for i in range(6))  # a 3³ lesion inside every 16³ patch of step 0
    with pytest.raises(ValueError, match="lesion_warmup must be >= 0"):
        _batches(_volume(), lesion_warmup=-1)
    with pytest.raises(ConfigError, match="data.lesion_warmup"):
        Config.build(overrides=["data.lesion_warmup=-5"])
    assert Config.build(overrides=["data.lesion_warmup=200"]).data.lesion_warmup == 200


def test_hard_negative_centres_lie_in_the_listed_organs_and_on_hot_non_lesion_voxels():
    volume = _volume()
    # The top 0.05 % (42 voxels) are the lesion's and the hot spot's 27 each.
    negatives = HardNegatives(volume.image[0], volume.label, volume.organs, (BRAIN, KIDNEY_L, KIDNEY_R), 0.9995)
    rng = np.random.default_rng(1)
    organs = [int(volume.organs[tuple(negatives.organ_centre(rng))]) for _ in range(400)]
    assert set(organs) == {BRAIN, KIDNEY_L}  # the listed organs present; never the liver or background
    assert 0.4 < organs.count(KIDNEY_L) / len(organs) < 0.6  # organ first, then voxel: the small one as often
    hot = np.array([negatives.hot_centre(rng) for _ in range(200)])
    assert all(volume.label[tuple(c)] == 0 for c in hot)  # never a lesion voxel, though the lesion is hotter
    assert ((hot >= [30, 30, 10]) & (hot < [33, 33, 13])).all()  # all in the hot spot
    # Without organ labels an organ patch is centred on a hot voxel instead; a lesion-free case gives random.
    batches = _batches(_volume(organs=False, lesions=False))
    assert batches.centre(0, "organ", rng) is not None and batches.centre(0, "lesion", rng) is None
    centre = batches.centre(0, "organ", rng)
    assert batches.volumes[0].image[0][tuple(centre)] >= np.quantile(batches.volumes[0].image[0], 0.999)


def test_candidate_sets_are_capped_and_the_same_in_every_process():
    volume = _volume()  # the liver has 9600 voxels, half the volume is above the PET median
    sets = [HardNegatives(volume.image[0], volume.label, volume.organs, (LIVER,), 0.5) for _ in range(2)]
    (liver,) = sets[0].organ_sets
    assert len(liver) == MAX_CANDIDATES == len(sets[0].hot) and len(np.unique(liver)) == MAX_CANDIDATES
    assert (volume.organs.ravel()[liver] == LIVER).all() and (volume.label.ravel()[sets[0].hot] == 0).all()
    assert np.array_equal(liver, sets[1].organ_sets[0]) and np.array_equal(sets[0].hot, sets[1].hot)


def test_organ_patches_are_centred_on_their_organ():
    batches = _batches(_volume(), batch_size=1, lesion=0.0, organ=1.0, hot=0.0)
    for step in range(10):  # the organs fill 1 % of the volume: a random 16³ patch would often miss both
        organs = batches[step]["organs"][0]
        assert ((organs == BRAIN) | (organs == KIDNEY_L)).any()


def test_shares_are_validated():
    with pytest.raises(ValueError, match="sum to <= 1"):
        _batches(_volume(), lesion=0.5, organ=0.6, hot=0.6)
    with pytest.raises(ConfigError, match="sum to <= 1"):
        Config.build(overrides=["data.organ_fraction=0.7", "data.hot_fraction=0.5"])
    assert Config.build(overrides=["data.lesion_fraction=1"]).data.lesion_fraction == 1  # no room: no hard negatives
    with pytest.raises(ConfigError, match="data.hard_negative_organs: unknown organ name.*spleenn"):
        Config.build(overrides=["data.hard_negative_organs=brain,spleenn"])
    assert Config.build(overrides=["data.hard_negative_organs="]).data.hard_negative_organs == ""
    with pytest.raises(ConfigError, match="augment.gamma_range"):
        Config.build(overrides=["augment.gamma_range=1.5,0.7"])


def test_left_right_flip_swaps_organ_labels_and_other_flips_do_not():
    organs = np.zeros((1, 4, 5, 6), np.float32)
    organs[0, 1, 2, 0] = KIDNEY_L  # left kidney at the low-X edge ...
    organs[0, 2, 2, 5] = KIDNEY_R
    organs[0, 3, 0, 1] = BRAIN
    item = {"image": np.arange(2 * 120, dtype=np.float32).reshape(2, 4, 5, 6), "organs": organs}
    flipped = mirror(item, (False, False, True))
    np.testing.assert_array_equal(flipped["image"], item["image"][..., ::-1])
    assert flipped["organs"][0, 1, 2, 5] == KIDNEY_R  # ... is at the high-X edge and named right
    assert flipped["organs"][0, 2, 2, 0] == KIDNEY_L and flipped["organs"][0, 3, 0, 4] == BRAIN
    z_flip = mirror(item, (True, False, False))
    assert z_flip["organs"][0, 2, 2, 0] == KIDNEY_L and z_flip["organs"][0, 1, 2, 5] == KIDNEY_R


def test_pet_misregistration_shifts_only_the_pet_channel():
    channel = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    moved = shift_channel(channel, (1, 0, -2))
    np.testing.assert_array_equal(moved[1:, :, :4], channel[:-1, :, 2:])
    np.testing.assert_array_equal(moved[0], moved[1])  # the uncovered border is edge-padded
    config = AugmentConfig(**{**vars(NO_AUGMENT), "misalign_prob": 1.0})
    image = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)
    out = Augmentation(config, False)({"image": image.copy(), "label": np.zeros((1, 8, 8, 8), np.float32)},
                                      np.random.default_rng(3))
    np.testing.assert_array_equal(out["image"][1], image[1])
    assert not np.array_equal(out["image"][0], image[0])


def test_every_augmentation_is_a_function_of_the_generator():
    config = AugmentConfig(**{name: 1.0 if name.endswith("_prob") else value
                              for name, value in vars(AugmentConfig()).items()})
    volume = _volume()
    batches = PatchBatches([volume], (16, 16, 16), batch_size=2, lesion_fraction=0.5, augment=config, seed=4,
                           use_organs=True, steps=3)
    first, again = batches[1], PatchBatches([volume], (16, 16, 16), batch_size=2, lesion_fraction=0.5,
                                            augment=config, seed=4, use_organs=True, steps=3)[1]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert first["image"].dtype == torch.float32 and torch.isfinite(first["image"]).all()
    assert set(first["organs"].unique().tolist()) <= {0, BRAIN, KIDNEY_L, KIDNEY_R, LIVER}
