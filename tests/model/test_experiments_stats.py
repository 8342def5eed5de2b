"""Protocol statistics on data whose answers are known: constant shifts, pure noise, hand-enumerated
sign flips, Holm on fixed p-values, and a case-clustered lesion sensitivity."""

import itertools
import math

import numpy as np
import pytest

from anatoseg.experiments.stats import (
    Interval,
    bootstrap_ci,
    case_means,
    compare,
    holm,
    lesion_sensitivity_ci,
    paired_differences,
    reading,
    sign_flip_test,
    wilcoxon_test,
)


def _table(values: dict[str, np.ndarray], cases=None) -> dict:
    """``{variant: (n_cases, n_seeds) array}`` -> results table; NaN cells become None."""
    out = {}
    for name, array in values.items():
        ids = cases or [f"c{i:02d}" for i in range(array.shape[0])]
        out[name] = {seed: {c: (None if math.isnan(array[i, seed]) else float(array[i, seed]))
                            for i, c in enumerate(ids)} for seed in range(array.shape[1])}
    return out


def test_paired_differences_drops_cells_that_do_not_apply():
    ref = np.array([[0.5, 0.6], [np.nan, np.nan], [0.7, 0.8]])  # case c01 lesion-free: Dice does not apply
    var = np.array([[0.6, 0.7], [np.nan, np.nan], [0.7, np.nan]])  # c02 seed 1: an empty prediction
    d, cases, seeds = paired_differences(_table({"full method": ref, "v": var}), "v")
    assert cases == ["c00", "c02"] and seeds == [0, 1]
    np.testing.assert_allclose(d, [[0.1, 0.1], [0.0, np.nan]], atol=1e-12)
    np.testing.assert_allclose(case_means(d), [0.1, 0.0], atol=1e-12)


@pytest.mark.parametrize("scheme", ["crossed", "nested"])
def test_constant_shift_ci_excludes_zero_and_contains_shift(scheme):
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.3, 0.9, size=(15, 3))
    d, _, _ = paired_differences(_table({"full method": ref, "v": ref + 0.1}), "v")
    ci = bootstrap_ci(d, scheme=scheme)
    assert ci.estimate == pytest.approx(0.1) and ci.n_boot == 2000
    assert ci.low > 0 and ci.low - 1e-12 <= 0.1 <= ci.high + 1e-12  # ref + 0.1 - ref is 0.1 up to rounding
    noisy = bootstrap_ci(0.1 + rng.normal(0, 0.02, size=(15, 3)), scheme=scheme)
    assert noisy.low > 0 and noisy.contains(0.1)


def test_bootstrap_is_reproducible_and_seed_dependent():
    d = np.random.default_rng(2).normal(size=(10, 3))
    assert bootstrap_ci(d, seed=5) == bootstrap_ci(d, seed=5)
    assert bootstrap_ci(d, seed=5).low != bootstrap_ci(d, seed=6).low


def test_noise_ci_covers_zero_about_95_percent():
    rng = np.random.default_rng(3)
    covered = [bootstrap_ci(rng.normal(size=(30, 3)), n_boot=400, seed=i).contains(0.0) for i in range(300)]
    assert np.mean(covered) >= 0.93  # about 0.98: resampling seeds too is conservative for i.i.d. cells


def test_sign_flip_exact_matches_enumeration():
    x = np.array([1.0, -2.0, 4.0, 0.5])
    flips = [abs(np.dot(s, x)) >= abs(x.sum()) - 1e-12 for s in itertools.product((1, -1), repeat=x.size)]
    assert sign_flip_test(x) == pytest.approx(np.mean(flips))
    assert sign_flip_test([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)  # |sum| >= 6 only for all + or all -


def test_sign_flip_monte_carlo_above_16_units():
    x = np.linspace(0.1, 1.0, 20)  # all positive: exact p = 2 / 2**20
    p = sign_flip_test(x, n_perm=5000)
    assert p == pytest.approx(1 / 5001, abs=2e-4)
    assert sign_flip_test(np.random.default_rng(0).normal(size=40)) > 0.05


def test_wilcoxon():
    assert wilcoxon_test(np.arange(1, 11, dtype=float)) == pytest.approx(2 / 2**10)  # exact: only all-positive
    assert wilcoxon_test([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(wilcoxon_test([np.nan]))


def test_holm_on_known_pvalues():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": float("nan")})
    # m = 3 finite: a 0.01*3 = 0.03; c 0.03*2 = 0.06; b 0.04*1 = 0.04 -> running max 0.06
    assert adjusted["a"] == pytest.approx(0.03)
    assert adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06)
    assert math.isnan(adjusted["d"])
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_reading_follows_metric_direction():
    up, down, zero = Interval(0.1, 0.05, 0.15, 0.95, 10), Interval(-0.1, -0.2, -0.01, 0.95, 10), \
        Interval(0.0, -0.1, 0.1, 0.95, 10)
    assert reading(zero, True) == "no difference"
    assert reading(up, True) == "variant better" and reading(up, False) == "reference better"
    assert reading(down, False) == "variant better" and reading(down, True) == "reference better"


def test_compare_end_to_end():
    rng = np.random.default_rng(4)
    ref = rng.uniform(0.4, 0.8, size=(20, 3))
    ref[5] = np.nan  # a lesion-free case
    table = _table({"full method": ref, "worse": ref - 0.1 + rng.normal(0, 0.01, ref.shape),
                    "same": ref + rng.normal(0, 0.05, ref.shape)})
    rows = compare(table, "dice", n_boot=500)
    assert set(rows) == {"worse", "same"}
    assert rows["worse"].n_cases == 19 and rows["worse"].n_seeds == 3
    assert rows["worse"].reading == "reference better" and rows["worse"].ci_high < 0
    assert rows["same"].reading == "no difference"
    for row in rows.values():
        assert row.p_sign_flip_holm >= row.p_sign_flip and row.p_wilcoxon_holm >= row.p_wilcoxon
    assert compare(table, "fpv_ml", n_boot=200)["worse"].reading == "variant better"  # lower is better
    with pytest.raises(ValueError, match="higher_is_better"):
        compare(table, "mystery")


def test_lesion_sensitivity_case_clustered():
    all_found = lesion_sensitivity_ci({"a": (3, 3), "b": (1, 1), "neg": (0, 0)}, n_boot=300)
    assert (all_found.estimate, all_found.low, all_found.high) == (1.0, 1.0, 1.0)
    counts = {"a": (9, 10), "b": (0, 10), "c": (5, 10), "d": (10, 10), "neg": (0, 0)}
    ci = lesion_sensitivity_ci(counts)
    assert ci.estimate == pytest.approx(24 / 40) and ci.contains(0.6)
    assert 0.0 <= ci.low < 0.45 and 0.75 < ci.high <= 1.0  # 4 clusters: wide, unlike 40 independent lesions
    with pytest.raises(ValueError):
        lesion_sensitivity_ci({"neg": (0, 0)})
