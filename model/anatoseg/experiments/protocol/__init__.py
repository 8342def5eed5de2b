"""The experiment protocol: every variant trained with several seeds on fixed phantom cohorts, scored
per test case, compared pairwise with the full method, reported in ``results.md``.

    python -m anatoseg.experiments.protocol OUT [--scale cpu|gpu] [--variants ...] [--seeds N] [--jobs N] [--device ...]

Modules: :mod:`.config` (budgets per scale, cohort seeds), :mod:`.variants` (the variant registry,
groups and sanity rows), :mod:`.stages` (cohorts, stage 1, stage 2: made once per run folder),
:mod:`.units` (one (variant, seed): train, predict, score, save as JSON), :mod:`.scoring` (one
test case's record), :mod:`.report` (``results.md``), :mod:`.run` (the resumable driver),
:mod:`.workers` (pending units one by one or in parallel processes), :mod:`.regenerate` (a run
folder's report rendered again from its files).
"""

from anatoseg.experiments.protocol.config import SCALES, Scale
from anatoseg.experiments.protocol.run import Plan, make_plan, run
from anatoseg.experiments.protocol.variants import GROUPS, SANITY, VARIANTS

__all__ = ["GROUPS", "SANITY", "SCALES", "VARIANTS", "Plan", "Scale", "make_plan", "run"]
