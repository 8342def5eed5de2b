"""The end-to-end demo (``anato demo`` / ``make demo``): :func:`run_demo`, budgets in :mod:`.plan`."""

from anatoseg.demo.plan import FULL, QUICK, DemoPlan
from anatoseg.demo.run import run_demo

__all__ = ["FULL", "QUICK", "DemoPlan", "run_demo"]
