"""Random organ-label corruption for prompt robustness: each corruption, its rates, determinism, bad inputs."""

import numpy as np
import pytest
from scipy import ndimage

from anatoseg.errors import ConfigError
from anatoseg.training.organ_corruption import OrganCorruptionConfig, corrupt_organs

OFF = OrganCorruptionConfig(drop_prob=0.0, morph_prob=0.0, shift_prob=0.0)


def _phantom():
    """Three box organs in a (13, 17, 11) map; organ 3 touches the patch border."""
    organs = np.zeros((13, 17, 11), np.uint8)
    organs[2:6, 3:9, 2:7] = 1
    organs[7:11, 4:10, 3:8] = 2
    organs[:4, 12:, 6:] = 3
    return organs


def _only(**values):
    return OrganCorruptionConfig(**{**vars(OFF), **values})


def test_off_is_an_unchanged_copy():
    organs = _phantom()
    out = corrupt_organs(organs, OFF, np.random.default_rng(0))
    assert out is not organs and out.dtype == np.uint8 and np.array_equal(out, organs)
    assert not OFF.enabled and OrganCorruptionConfig().enabled


def test_same_generator_state_same_output_and_input_untouched():
    organs = _phantom()
    before = organs.copy()
    config = OrganCorruptionConfig(drop_prob=0.3, morph_prob=0.5, shift_prob=0.5)
    outs = [corrupt_organs(organs, config, np.random.default_rng([4, 7, 1])) for _ in range(2)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(organs, before)
    others = [corrupt_organs(organs, config, np.random.default_rng([4, 7, i])) for i in range(2, 12)]
    assert any(not np.array_equal(o, outs[0]) for o in others)


def test_drop_erases_whole_organs_at_its_rate():
    organs = _phantom()
    assert not corrupt_organs(organs, _only(drop_prob=1.0), np.random.default_rng(0)).any()
    kept = 0
    for seed in range(300):
        out = corrupt_organs(organs, _only(drop_prob=0.25), np.random.default_rng(seed))
        for label in (1, 2, 3):
            n = int((out == label).sum())
            assert n in (0, int((organs == label).sum()))  # all or nothing, nothing else moves
            kept += n > 0
        assert np.array_equal(out[out > 0], organs[out > 0])
    assert abs(kept / 900 - 0.75) < 0.05


@pytest.mark.parametrize("radius", [1, 2])
def test_dilation_and_erosion_move_the_boundary_by_the_radius(radius):
    organs = np.zeros((9, 11, 10), np.uint8)
    organs[3:6, 4:7, 3:7] = 4
    inside = organs == 4
    config = _only(morph_prob=1.0, morph_radius=radius)
    grown = shrunk = None
    for seed in range(40):
        out = corrupt_organs(organs, config, np.random.default_rng(seed))
        if (out == 4).sum() > inside.sum():
            grown = out
        elif (out == 4).sum() < inside.sum():
            shrunk = out
    assert grown is not None and shrunk is not None  # both directions happen; the radius is 1..radius
    steps = [np.array_equal(grown == 4, ndimage.binary_dilation(inside, iterations=r)) for r in range(1, radius + 1)]
    assert any(steps)
    eroded = [np.array_equal(shrunk == 4, ndimage.binary_erosion(inside, iterations=r)) for r in range(1, radius + 1)]
    assert any(eroded)
    assert set(np.unique(shrunk)) <= {0, 4}


def test_erosion_keeps_an_organ_at_the_patch_border_there():
    organs = np.zeros((8, 8, 8), np.uint8)
    organs[:4, 2:6, 2:6] = 5  # an organ cut by the patch's z = 0 face
    for seed in range(20):
        out = corrupt_organs(organs, _only(morph_prob=1.0, morph_radius=1), np.random.default_rng(seed))
        if (out == 5).sum() < (organs == 5).sum():
            expected = np.zeros_like(organs)
            expected[:3, 3:5, 3:5] = 5  # the cut face stays, the other faces lose one voxel
            assert np.array_equal(out, expected)
            return
    pytest.fail("no erosion in 20 draws")


def test_dilation_takes_a_neighbouring_organs_voxels():
    organs = np.zeros((6, 6, 6), np.uint8)
    organs[:, :, :3] = 1
    organs[:, :, 3:] = 2
    for seed in range(40):
        out = corrupt_organs(organs, _only(morph_prob=1.0, morph_radius=1), np.random.default_rng(seed))
        if (out == 1).sum() > (organs == 1).sum():  # organ 1 grew into organ 2
            assert (out[:, :, 3] == 1).all()
            return
    pytest.fail("organ 1 never dilated in 40 draws")


def test_shift_moves_the_map_and_uncovers_background():
    organs = _phantom()
    for seed in range(10):
        rng = np.random.default_rng(seed)
        out = corrupt_organs(organs, _only(shift_prob=1.0, shift_max=2), rng)
        found = [(dz, dy, dx) for dz in range(-2, 3) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(out, _shifted(organs, (dz, dy, dx)))]
        assert found, f"seed {seed}: not a shift of at most 2 voxels"


def _shifted(organs, offset):
    padded = np.pad(organs, 2)
    moved = np.roll(padded, offset, axis=(0, 1, 2))
    return moved[2:-2, 2:-2, 2:-2]


def test_shift_larger_than_the_patch_empties_it():
    organs = np.ones((2, 3, 4), np.uint8)
    empty = 0
    for seed in range(30):
        out = corrupt_organs(organs, _only(shift_prob=1.0, shift_max=9), np.random.default_rng(seed))
        assert out.shape == organs.shape and set(np.unique(out)) <= {0, 1}
        if out.any():  # what is left of the map is one full box
            box = tuple(slice(i.min(), i.max() + 1) for i in np.nonzero(out))
            assert out[box].all()
        empty += not out.any()
    assert empty > 0


def test_bad_inputs_and_config_values():
    with pytest.raises(TypeError, match="uint8"):
        corrupt_organs(_phantom().astype(np.int64), OFF, np.random.default_rng(0))
    with pytest.raises(TypeError, match="uint8"):
        corrupt_organs(_phantom()[0], OFF, np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        corrupt_organs(_phantom(), OFF, 0)
    with pytest.raises(ConfigError, match=r"augment\.drop_prob must lie in \[0, 1\]"):
        _only(drop_prob=1.5).validate("augment")
    with pytest.raises(ConfigError, match="shift_max must be an int"):
        _only(shift_max=-1).validate()
    with pytest.raises(ConfigError, match="morph_radius must be ≥ 1"):
        _only(morph_prob=0.5, morph_radius=0).validate()
    OrganCorruptionConfig().validate()
