"""``results.md`` of a protocol run, from its unit JSONs alone (:mod:`.units`).

Sections: the main table (per variant, mean ± sd over training seeds of the per-seed means over
test cases), paired comparisons against the reference variant (the full method unless the run names another,
e.g. ``--reference "no prompts"``; :func:`anatoseg.experiments.stats.compare`; the per-case metrics of
:data:`COMPARED`, lesion sensitivity among them as the share of a case's lesions found):
hierarchical bootstrap 95 % CI over cases then seeds, Holm-corrected sign-flip and Wilcoxon
p-values, "no difference" when the CI contains 0), pooled lesion sensitivity with a case-clustered
bootstrap CI, the lesion-level FROC, false positives by organ, sensitivity by lesion site, size
and hard tag, the cost per variant (parameters, training and prediction time, :mod:`.cost`), stage 1's organ
Dice on the test cases (teacher vs student, :mod:`.organ_scores`), the
sanity-baseline reading, and the provenance (command, machine, commit, time).

A sanity row (deterministic) enters the paired comparisons with its one result repeated for every
seed of the reference. It *rivals* the networks when its mean Dice is at least the best network's
minus :data:`RIVAL_MARGIN`; the report then says the phantom is too easy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from anatoseg.experiments import stats
from anatoseg.experiments.protocol import cost, organ_scores
from anatoseg.experiments.protocol.variants import REFERENCE, SANITY, VARIANTS
from anatoseg.metrics.breakdown import FP_ORGAN_GROUPS, sensitivity_by
from anatoseg.metrics.froc import FP_RATES, CaseScores, froc

RIVAL_MARGIN = 0.05
"""Dice within which a no-learning row "rivals" the best network."""
COMPARED = (("dice", "Dice"), ("fpv_ml", "FPV (ml)"), ("fnv_ml", "FNV (ml)"), ("fp", "FP components"),
            ("fp_uptake", "FP components in uptake organs"), ("fpv_uptake_ml", "FPV in uptake organs (ml)"),
            ("lesion_sensitivity", "lesion sensitivity"))
"""Per-case metrics compared pairwise with the reference."""
UPTAKE_GROUPS = tuple(FP_ORGAN_GROUPS)
"""The false-positive organ groups of physiological uptake that anatomy should explain: every named group of
:data:`anatoseg.metrics.breakdown.FP_ORGAN_GROUPS` (not "other")."""
DERIVED = {"fp_uptake": "count", "fpv_uptake_ml": "volume_ml"}
"""Per-case metrics summed over :data:`UPTAKE_GROUPS` of the case's ``fp_by_organ`` (the field summed)."""
TIME_TITLES = {"wall": "Wall", "cpu": "CPU (user + system, all threads)"}
BREAKDOWNS = (("site", "lesion site"), ("size", "size bin"), ("hard", "hard tag"), ("relation", "relation to organs"))


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def case_value(case: dict, metric: str):
    """``metric`` of one case record: a stored key, one of :data:`DERIVED`, or ``lesion_sensitivity`` (the share
    of the case's lesions detected; None on a lesion-free case)."""
    if metric == "lesion_sensitivity":
        return _pooled([case])
    if metric in DERIVED:
        return sum(case["fp_by_organ"].get(group, {}).get(DERIVED[metric], 0) for group in UPTAKE_GROUPS)
    return case.get(metric)


def by_variant(units: Sequence[dict], reference: str = REFERENCE) -> dict[str, dict[int, dict]]:
    """``{variant: {seed: unit}}``: the reference first, then the registry's variants in its order, then the
    sanity rows, then any other."""
    order = [reference, *VARIANTS, *SANITY]
    rank = {name: i for i, name in enumerate(dict.fromkeys(order))}
    out: dict[str, dict[int, dict]] = {}
    for unit in sorted(units, key=lambda u: (rank.get(u["variant"], len(rank)), u["variant"], u["seed"])):
        out.setdefault(unit["variant"], {})[unit["seed"]] = unit
    return out


def metric_table(variants: dict[str, dict[int, dict]], metric: str, reference: str = REFERENCE) -> dict:
    """:data:`anatoseg.experiments.stats.Table` of ``metric``; sanity rows repeated over the reference's seeds."""
    seeds = sorted(variants.get(reference, {}))
    table = {}
    for name, units in variants.items():
        rows = {seed: {c["case"]: case_value(c, metric) for c in unit["cases"]} for seed, unit in units.items()}
        if next(iter(units.values()))["kind"] == "sanity" and seeds:
            rows = {seed: next(iter(rows.values())) for seed in seeds}
        table[name] = rows
    return table


def froc_at(unit: dict) -> dict[float, float]:
    """FROC sensitivities at :data:`FP_RATES` of one unit's test cases, plus ``"mean"``."""
    curve = froc([CaseScores.from_dict(c["froc"]) for c in unit["cases"]])
    return {**curve.at, "mean": curve.mean}


def main_table(variants: dict[str, dict[int, dict]]) -> list[str]:
    rates = " | ".join(f"FROC @{r:g}" for r in FP_RATES)
    lines = [f"| variant | seeds | Dice | FPV (ml) | FNV (ml) | FP comp./case | lesion sens. | {rates} | train min |",
             "|---" * (8 + len(FP_RATES)) + "|"]
    for name, units in variants.items():
        per_seed = list(units.values())
        cols = [_mean_sd(_mean(c.get(key) for c in u["cases"]) for u in per_seed)
                for key in ("dice", "fpv_ml", "fnv_ml", "fp")]
        sens = _mean_sd(_pooled(u["cases"]) for u in per_seed)
        curves = [froc_at(u) for u in per_seed]
        frocs = [_mean_sd(c[r] for c in curves) for r in FP_RATES]
        train = _mean(u["seconds"].get("train") for u in per_seed)
        lines.append(f"| {name} | {len(per_seed)} | " + " | ".join([*cols, sens, *frocs])
                     + f" | {_fmt(None if train is None else train / 60, 1)} |")
    return lines


def _pooled(cases: Sequence[dict]) -> float | None:
    tp, fn = sum(c["tp"] for c in cases), sum(c["fn"] for c in cases)
    return tp / (tp + fn) if tp + fn else None


def comparisons(variants: dict[str, dict[int, dict]], n_boot: int = 2000, reference: str = REFERENCE) -> list[str]:
    """Paired differences ``variant - reference`` per metric of :data:`COMPARED`."""
    if reference not in variants or len(variants) < 2:
        return [f"(no paired comparison: needs {reference!r} and another variant)"]
    paired = [name for name in variants if name != reference and set(variants[name]) & set(variants[reference])]
    # a run in progress (several jobs) can hold a variant's seed 1 before the reference's
    waiting = [name for name in variants if name not in (reference, *paired)]
    note = [f"(not compared yet, no seed in common with the {reference}: {', '.join(waiting)})", ""] if waiting else []
    if not paired:
        return note or [f"(no paired comparison: needs {reference!r} and another variant)"]
    lines = [*note, "| metric | variant | cases | seeds | mean diff. | 95 % CI | p sign-flip (Holm) "
             "| p Wilcoxon (Holm) | reading |", "|---" * 9 + "|"]
    for metric, title in COMPARED:
        found = stats.compare(metric_table(variants, metric, reference), metric, reference=reference,
                              variants=paired, n_boot=n_boot)
        for row in found.values():
            lines.append(f"| {title} | {row.variant} | {row.n_cases} | {row.n_seeds} | {row.mean_difference:+.3f} "
                         f"| [{row.ci_low:+.3f}, {row.ci_high:+.3f}] | {_fmt(row.p_sign_flip_holm)} "
                         f"| {_fmt(row.p_wilcoxon_holm)} | {row.reading} |")
    return lines


def lesion_sensitivity(variants: dict[str, dict[int, dict]], n_boot: int = 2000) -> list[str]:
    lines = ["| variant | detected / lesions (all seeds) | pooled sensitivity | 95 % CI (case-clustered) |",
             "|---|---|---|---|"]
    for name, units in variants.items():
        counts: dict[str, list[int]] = {}
        for unit in units.values():
            for c in unit["cases"]:
                entry = counts.setdefault(c["case"], [0, 0])
                entry[0], entry[1] = entry[0] + c["tp"], entry[1] + c["tp"] + c["fn"]
        if not any(n for _, n in counts.values()):
            lines.append(f"| {name} | 0 / 0 | – | – |")
            continue
        ci = stats.lesion_sensitivity_ci({k: tuple(v) for k, v in counts.items()}, n_boot=n_boot)
        tp, n = (sum(v[i] for v in counts.values()) for i in (0, 1))
        lines.append(f"| {name} | {tp} / {n} | {ci.estimate:.3f} | [{ci.low:.3f}, {ci.high:.3f}] |")
    return lines


def fp_by_organ(variants: dict[str, dict[int, dict]]) -> list[str]:
    """Mean false-positive components per case (over cases and seeds) by organ group."""
    first = next(iter(next(iter(variants.values())).values()))
    groups = list(first["cases"][0]["fp_by_organ"]) if first["cases"] else []
    lines = ["| variant | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for name, units in variants.items():
        cases = [c for u in units.values() for c in u["cases"]]
        lines.append(f"| {name} | " + " | ".join(_fmt(_mean(c["fp_by_organ"].get(g, {}).get("count", 0)
                                                            for c in cases), 2) for g in groups) + " |")
    return lines


def breakdown(variants: dict[str, dict[int, dict]], attribute: str) -> list[str]:
    """Pooled lesion sensitivity (all seeds) per value of ``attribute``; cells ``sens (n)``."""
    pooled = {name: sensitivity_by([r for u in units.values() for c in u["cases"] for r in c["lesions"]], attribute)
              for name, units in variants.items()}
    keys = list(dict.fromkeys(k for table in pooled.values() for k in table))
    if not keys:
        return [f"(no lesion carries a {attribute!r} tag)"]
    lines = ["| variant | " + " | ".join(str(k) for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, table in pooled.items():
        cells = [f"{_fmt(table[k]['sensitivity'], 2)} ({table[k]['n']})" if k in table else "–" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def sanity_reading(variants: dict[str, dict[int, dict]]) -> str:
    """One sentence: does a no-learning row rival the best network (module docstring)?"""
    dice = {name: _mean(_mean(c.get("dice") for c in u["cases"]) for u in units.values())
            for name, units in variants.items()}
    kinds = {name: next(iter(units.values()))["kind"] for name, units in variants.items()}
    nets = {n: d for n, d in dice.items() if kinds[n] == "network" and d is not None}
    sanity = {n: d for n, d in dice.items() if kinds[n] == "sanity" and d is not None}
    if not nets or not sanity:
        return "Sanity baseline: not comparable (needs a network row and a sanity row)."
    best, rival = max(nets, key=nets.get), max(sanity, key=sanity.get)
    if nets[best] < RIVAL_MARGIN:
        return (f"No network reaches Dice {RIVAL_MARGIN} (best {best!r}, {nets[best]:.3f}): they did not leave "
                f"the all-background plateau (or over-call everywhere), so the sanity comparison says nothing.")
    if sanity[rival] >= nets[best] - RIVAL_MARGIN:
        return (f"**The phantom is too easy:** the no-learning row {rival!r} reaches Dice {sanity[rival]:.3f}, "
                f"within {RIVAL_MARGIN} of the best network ({best!r}, {nets[best]:.3f}).")
    return (f"The best network ({best!r}, Dice {nets[best]:.3f}) beats the best no-learning row ({rival!r}, "
            f"{sanity[rival]:.3f}) by more than {RIVAL_MARGIN}.")


def stale(units: Sequence[dict], commit: str | None) -> list[str]:
    """Lines naming the units that ran on another commit than ``commit``."""
    other = [u for u in units if u.get("commit") != commit]
    return [f"- {u['variant']} seed {u['seed']}: commit {str(u.get('commit'))[:10]}" for u in other]


def invocations(meta: dict) -> list[str]:
    """The provenance lines of the commands that made the run: every recorded invocation (``runs``,
    oldest first) or, in a ``protocol.json`` written before they were recorded, the last one."""
    runs = meta.get("runs")
    if not runs:
        return [f"Command: `{meta['command']}`", f"Machine: {meta['machine']}", f"Commit: {meta.get('commit')}"]
    return ["Commands, in the order they ran:", "",
            *(f"{k}. `{run['command']}` (commit {str(run['commit'])[:10]}, {run['machine']}, started "
              f"{run['started']})" for k, run in enumerate(runs, 1)), ""]


def retest_line(meta: dict) -> list[str]:
    """The line saying a run folder is a retest (:mod:`.retest`): whose models, which fresh test cohort."""
    retest = meta.get("retest_of")
    if not retest:
        return []
    return [f"**Retest:** nothing was trained here; the models of `{retest['folder']}` scored on a fresh test "
            f"cohort (phantom seed {retest['test_seed']}) that no variant was chosen on."]


def render(units: Sequence[dict], meta: dict, n_boot: int = 2000, stage1: dict | None = None,
           reference: str | None = None) -> str:
    """The whole ``results.md`` (module docstring); ``meta``: command, machine, commit, scale, seconds and the
    run's ``reference`` variant (the full method when absent); ``reference`` overrides it (the same units
    compared with another variant); ``stage1``: the held-out organ Dice of the stage-1 models
    (:mod:`.organ_scores`), if scored."""
    if not units:
        return "# Experiment protocol\n\nNo finished unit yet.\n"
    reference = reference or meta.get("reference", REFERENCE)
    variants = by_variant(units, reference)
    scale = meta["scale"]
    text = ["# Experiment protocol results", "",
            f"Scale `{scale['name']}`: phantom {scale['spacing']} mm; {scale['test_cases']} test cases "
            f"({scale['test_negatives']:.0%} lesion-free), {scale['train_cases']} training cases "
            f"({scale['val_cases']} for validation), {scale['pretrain_cases']} pretraining, "
            f"{scale['organ_cases']} stage-1 source; cohort seeds {meta['cohort_seeds']}; stage 3: "
            f"{scale['steps']} steps, batch {scale['batch_size']}, patch {'×'.join(map(str, scale['patch']))}, "
            f"preset {scale['preset']}; training seeds per variant: {scale['seeds']}.",
            *retest_line(meta),
            "Per variant: mean ± sd over seeds of the mean over test cases (Dice and FNV over cases with "
            "lesions, FPV and FP components over all). FROC: lesion sensitivity at the given false positives "
            "per case, threshold-free.", "", *main_table(variants), "",
            f"## Paired differences against the {reference}", "",
            f"Uptake organs: {', '.join(UPTAKE_GROUPS)} (false positives by the organ group they fall in).", "",
            *comparisons(variants, n_boot, reference), "",
            "## Lesion sensitivity", "", *lesion_sensitivity(variants, n_boot), "",
            "## False-positive components per case by organ", "", *fp_by_organ(variants), ""]
    for attribute, title in BREAKDOWNS:
        text += [f"## Sensitivity by {title}", "", *breakdown(variants, attribute), ""]
    flagged = stale(units, meta.get("commit"))
    text += ["## Cost per variant", "", "Parameters rebuilt from each unit's stored config; times are the means "
             "over seeds of the units' own (one torch thread per unit, the run's jobs sharing the machine).", "",
             *cost.section(variants), ""]
    text += ["## Stage 1 on the test cases", "", *organ_scores.section(stage1 or {}, n_boot), ""]
    text += ["## Sanity baseline", "", sanity_reading(variants), "", "## Provenance", "", *invocations(meta),
             *(f"{TIME_TITLES.get(kind, kind)} time: " + ", ".join(f"{k} {v:.0f} s" for k, v in parts.items())
               for kind, parts in meta["times"].items()),
             *(["", "Units from another commit (kept, not rerun):", *flagged] if flagged else [])]
    return "\n".join(text) + "\n"
