"""Statistics of the experiment protocol: paired differences of a metric between a variant and the
reference variant, their bootstrap confidence interval, paired tests with Holm's correction, and a
case-clustered bootstrap of pooled lesion sensitivity.

Input of the paired comparisons is a *results table* ``{variant: {seed: {case_id: value}}}``: one
metric, each variant trained with several seeds and every seed's model scored on the same test
cases. ``None`` (or NaN) means the metric does not apply to that cell (Dice on a lesion-free case,
HD95 with an empty prediction); such cells take no part in a comparison.

Design and units of inference:

- **Paired differences** ``d[c, s] = value[variant][s][c] - value[reference][s][c]`` over the cases
  ``c`` and seeds ``s`` that both variants have; a matrix ``(n_cases, n_seeds)``, NaN where either
  value is missing. Cases with no defined difference at any seed are dropped.
- **Estimate**: the mean of the defined cells of ``d`` (for a complete matrix, the mean over cases
  of the per-case mean over seeds).
- **Bootstrap CI** (:func:`bootstrap_ci`), one replicate: draw ``n_cases`` case indices with
  replacement; then draw seeds with replacement *within that resampled design*: with
  ``scheme="crossed"`` (default) one draw of ``n_seeds`` seed indices is shared by every resampled
  case, because a seed is one trained model scored on all cases (cases and seeds are crossed
  factors; this keeps the seed-to-seed variation of the whole model in the interval); with
  ``scheme="nested"`` each resampled case draws its own seeds (the two-stage bootstrap of nested
  designs). The replicate statistic is the mean of the defined cells of the resampled matrix; the
  CI is the percentile interval of ``n_boot`` replicates (default 2000) from a fixed RNG seed.
  Resampling both levels is conservative when seeds add little variance (independent noise in
  every cell, 30 cases x 3 seeds: about 98 % coverage of a nominal 95 % interval), and honest when
  a seed shifts every case of its model.
- **Tests** (:func:`sign_flip_test`, :func:`wilcoxon_test`) take the case as the unit: the per-case
  difference averaged over seeds. Holm's step-down correction (:func:`holm`) runs across the
  variants compared with one reference.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

REFERENCE = "full method"
"""The reference variant of the paired comparisons (the results table's full method)."""

HIGHER_IS_BETTER = {"dice": True, "sensitivity": True, "lesion_sensitivity": True, "tp": True,
                    "fpv_ml": False, "fnv_ml": False, "fp": False, "fn": False, "hd95_mm": False,
                    "fp_uptake": False, "fpv_uptake_ml": False}
"""Direction of each metric key of :mod:`anatoseg.metrics.autopet` and of the protocol report's per-case
false positives in uptake organs (:data:`anatoseg.experiments.protocol.report.DERIVED`)."""

Table = Mapping[str, Mapping[object, Mapping[str, "float | None"]]]


def _value(x) -> float:
    return math.nan if x is None else float(x)


def paired_differences(table: Table, variant: str, reference: str = REFERENCE
                       ) -> tuple[np.ndarray, list[str], list]:
    """``(d, cases, seeds)``: ``d`` float64 ``(n_cases, n_seeds)`` of ``variant - reference``, NaN where
    either value is None/NaN or missing; over the seeds both variants have and the cases either has.

    Rows with no defined cell are dropped; cases and seeds are sorted (seeds by ``str``).
    """
    a, b = table[variant], table[reference]
    seeds = sorted(set(a) & set(b), key=str)
    if not seeds:
        raise ValueError(f"paired_differences: variants {variant!r} and {reference!r} share no seed "
                         f"({sorted(a, key=str)} vs {sorted(b, key=str)})")
    cases = sorted(set().union(*(set(a[s]) | set(b[s]) for s in seeds)))
    d = np.array([[_value(a[s].get(c)) - _value(b[s].get(c)) for s in seeds] for c in cases],
                 dtype=np.float64).reshape(len(cases), len(seeds))
    keep = ~np.all(np.isnan(d), axis=1)
    return d[keep], [c for c, k in zip(cases, keep) if k], seeds


def case_means(d: np.ndarray) -> np.ndarray:
    """Per-case mean over the defined seeds of ``d`` ``(n_cases, n_seeds)``: shape ``(n_cases,)``."""
    d = np.asarray(d, dtype=np.float64)
    return np.nanmean(d, axis=1) if d.ndim == 2 else d


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval ``[low, high]`` at ``level``."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _percentile_interval(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return Interval(float(estimate), math.nan, math.nan, level, 0)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(low), float(high), level, int(replicates.size))


def bootstrap_ci(d: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 scheme: str = "crossed", chunk: int = 250) -> Interval:
    """Hierarchical bootstrap CI of the mean paired difference (module docstring, "Bootstrap CI").

    ``d``: ``(n_cases, n_seeds)`` differences, NaN = undefined (a 1-D array is one seed). ``scheme``:
    ``"crossed"`` or ``"nested"``. Replicates are drawn ``chunk`` at a time to bound memory.
    """
    d = np.asarray(d, dtype=np.float64)
    d = d[:, None] if d.ndim == 1 else d
    if scheme not in ("crossed", "nested"):
        raise ValueError(f"bootstrap_ci: scheme must be 'crossed' or 'nested', got {scheme!r}")
    if d.size == 0 or np.all(np.isnan(d)):
        raise ValueError(f"bootstrap_ci: no defined difference in d of shape {d.shape}")
    n_cases, n_seeds = d.shape
    rng = np.random.default_rng(seed)
    replicates = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        ci = rng.integers(0, n_cases, size=(size, n_cases))
        if scheme == "crossed":
            si = rng.integers(0, n_seeds, size=(size, 1, n_seeds))
        else:
            si = rng.integers(0, n_seeds, size=(size, n_cases, n_seeds))
        sample = d[ci[:, :, None], si]  # (size, n_cases, n_seeds)
        with np.errstate(invalid="ignore"):
            counts = np.sum(~np.isnan(sample), axis=(1, 2))
            replicates.append(np.where(counts > 0, np.nansum(sample, axis=(1, 2)) / np.maximum(counts, 1), np.nan))
    return _percentile_interval(float(np.nanmean(d)), np.concatenate(replicates), level)


def sign_flip_test(units: Sequence[float], n_perm: int = 10000, seed: int = 0, exact_max: int = 16) -> float:
    """Two-sided paired sign-flip permutation p-value of ``mean(units) == 0``.

    ``units``: per-case differences ``(n,)`` (NaN dropped). Statistic ``|mean|``; under H0 each sign
    is flipped independently. Exact over all ``2**n`` sign vectors when ``n <= exact_max``; else
    Monte Carlo with ``n_perm`` draws and p = ``(1 + #{|mean*| >= |mean|}) / (1 + n_perm)``.
    """
    x = np.asarray(units, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan
    observed = abs(x.mean())
    tol = 1e-12 * max(1.0, float(np.abs(x).max()))
    if x.size <= exact_max:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=x.size)))
        return float(np.mean(np.abs(signs @ x) / x.size >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 2000):
        signs = rng.choice((1.0, -1.0), size=(min(2000, n_perm - start), x.size))
        hits += int(np.sum(np.abs(signs @ x) / x.size >= observed - tol))
    return (1 + hits) / (1 + n_perm)


def wilcoxon_test(units: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``, zeros dropped) of per-case
    differences ``(n,)``; 1.0 when every difference is zero, NaN when there is none."""
    x = np.asarray(units, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan
    if np.all(x == 0):
        return 1.0
    return float(sps.wilcoxon(x, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values, same keys: sorted ascending, ``p_(i) * (m - i)`` (i from 0),
    made monotone by a running maximum, capped at 1. NaN p-values stay NaN and do not count in m."""
    finite = sorted((p, k) for k, p in pvalues.items() if not math.isnan(p))
    m, running, out = len(finite), 0.0, {k: math.nan for k in pvalues}
    for i, (p, key) in enumerate(finite):
        running = max(running, min(1.0, p * (m - i)))
        out[key] = running
    return out


def reading(interval: Interval, higher_is_better: bool) -> str:
    """Plain reading of a CI of ``variant - reference``: ``"no difference"`` when it contains 0, else
    ``"variant better"`` or ``"reference better"`` given the metric's direction."""
    if math.isnan(interval.low) or interval.contains(0.0):
        return "no difference"
    return "variant better" if (interval.low > 0) == higher_is_better else "reference better"


@dataclass(frozen=True)
class Comparison:
    """One variant against the reference on one metric (differences are ``variant - reference``)."""

    variant: str
    reference: str
    metric: str
    n_cases: int
    n_seeds: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_sign_flip: float
    p_wilcoxon: float
    p_sign_flip_holm: float
    p_wilcoxon_holm: float
    reading: str

    def to_dict(self) -> dict:
        return asdict(self)


def compare(table: Table, metric: str, reference: str = REFERENCE, variants: Sequence[str] | None = None,
            higher_is_better: bool | None = None, n_boot: int = 2000, seed: int = 0,
            scheme: str = "crossed") -> dict[str, Comparison]:
    """Every variant of ``table`` (or ``variants``) against ``reference`` on ``metric``.

    Bootstrap CI (:func:`bootstrap_ci`), sign-flip and Wilcoxon p-values on the per-case seed means,
    both Holm-corrected across the variants compared, and the :func:`reading`. The direction comes
    from :data:`HIGHER_IS_BETTER` unless ``higher_is_better`` is given.
    """
    if higher_is_better is None:
        if metric not in HIGHER_IS_BETTER:
            raise ValueError(f"compare: direction of metric {metric!r} unknown; pass higher_is_better "
                             f"(known: {sorted(HIGHER_IS_BETTER)})")
        higher_is_better = HIGHER_IS_BETTER[metric]
    names = [v for v in (variants if variants is not None else table) if v != reference]
    rows = {}
    for name in names:
        d, cases, seeds = paired_differences(table, name, reference)
        units = case_means(d)
        rows[name] = (d, seeds, bootstrap_ci(d, n_boot=n_boot, seed=seed, scheme=scheme),
                      sign_flip_test(units, seed=seed), wilcoxon_test(units))
    holm_flip = holm({n: r[3] for n, r in rows.items()})
    holm_wilcoxon = holm({n: r[4] for n, r in rows.items()})
    return {n: Comparison(n, reference, metric, d.shape[0], len(seeds), ci.estimate, ci.low, ci.high, p_flip,
                          p_wil, holm_flip[n], holm_wilcoxon[n], reading(ci, higher_is_better))
            for n, (d, seeds, ci, p_flip, p_wil) in rows.items()}


def lesion_sensitivity_ci(counts: Mapping[str, tuple[int, int]], n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> Interval:
    """Pooled lesion-wise sensitivity ``sum TP / sum lesions`` with a case-clustered bootstrap CI.

    ``counts``: ``{case_id: (detected lesions, GT lesions)}`` (over several seeds: the sums over
    seeds). Cases without lesions carry no information and are left out; a replicate draws the
    remaining cases with replacement and pools all their lesions, so lesions of one case stay
    together (they are not independent). Percentile interval, fixed RNG ``seed``.
    """
    pairs = np.array([(tp, n) for tp, n in counts.values() if n > 0], dtype=np.float64).reshape(-1, 2)
    if pairs.size == 0:
        raise ValueError("lesion_sensitivity_ci: no case with a ground-truth lesion")
    if np.any(pairs[:, 0] > pairs[:, 1]) or np.any(pairs < 0):
        raise ValueError("lesion_sensitivity_ci: need 0 <= detected <= lesions for every case")
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(pairs), np.full(len(pairs), 1.0 / len(pairs)), size=n_boot)  # (n_boot, n)
    replicates = (weights @ pairs[:, 0]) / (weights @ pairs[:, 1])
    return _percentile_interval(float(pairs[:, 0].sum() / pairs[:, 1].sum()), replicates, level)
