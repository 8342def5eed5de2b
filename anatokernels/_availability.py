"""Whether a backend can run on this machine, and if not, why: one small value instead of status strings."""

from __future__ import annotations

from dataclasses import dataclass

STATES = ("available", "unverified", "unavailable", "unimplemented", "disabled")


@dataclass(frozen=True)
class Availability:
    """The status of one backend of one op here.

    state:
      ``available``     runs, and ``auto`` may pick it;
      ``unverified``    runs when asked for by name, never picked by ``auto`` (``reason`` says why);
      ``unavailable``   cannot run here (``reason``: e.g. no CUDA device, extension not built);
      ``unimplemented`` the op has no such backend;
      ``disabled``      switched off by the user (``ANATO_BUILD_EXT=0``).
    ``str()`` is what ``anato backends`` prints: ``"available"`` or the reason.
    """

    state: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"Availability: state must be one of {STATES}, got {self.state!r}")
        if self.state != "available" and not self.reason:
            raise ValueError(f"Availability: a {self.state!r} backend needs a reason")

    @property
    def is_available(self) -> bool:
        """Usable and trusted: ``auto`` may pick it."""
        return self.state == "available"

    @property
    def runs_by_name(self) -> bool:
        """Runs when asked for explicitly (available, or unverified)."""
        return self.state in ("available", "unverified")

    def __str__(self) -> str:
        if self.state == "available":
            return "available"
        return f"unverified: {self.reason}" if self.state == "unverified" else self.reason


AVAILABLE = Availability("available")


def unavailable(reason: str) -> Availability:
    return Availability("unavailable", reason)
