"""Detector configuration per tenant: each detector's mode and parameters, as an operator set them in a file.

``Tuning`` is what the engine reads (plain dicts, pickled with the engine's state); the file format and
its validation are the runtime's (``streams.detector_config``). Per detector, and optionally per tenant
(a tenant's entry wins over the detector's):

- ``mode``: ``enforce`` (alerts are published and routed), ``shadow`` (alerts are raised and stored
  with ``mode = shadow``, never published or routed: a trial) or ``off`` (the detector's findings are
  dropped, nothing is raised);
- ``budget_per_100k``: the detector's false-alarm budget in the tenant (``detectors.budget``), instead
  of the engine's ``alert_budget_per_100k``;
- ``min_score``: a floor: findings scoring below it raise nothing;
- ``cooldown_s`` (per detector only: episodes are folded before tenants are told apart): hits of one
  entity less than this apart make one alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["enforce", "shadow", "off"]
MODES: tuple[str, ...] = ("enforce", "shadow", "off")
PARAMETERS = ("mode", "budget_per_100k", "min_score", "cooldown_s")  # what an entry may set


@dataclass
class Tuning:
    """Per (detector, tenant or ``None`` for every tenant): parameter -> value."""

    entries: dict[tuple[str, str | None], dict[str, Any]] = field(default_factory=dict)

    def get(self, detector: str, tenant: str, name: str, default: Any = None) -> Any:
        """The tenant's value of ``name`` for ``detector``, else the detector's, else ``default``."""
        for key in ((detector, tenant), (detector, None)):
            entry = self.entries.get(key)
            if entry is not None and name in entry:
                return entry[name]
        return default

    def mode(self, detector: str, tenant: str) -> str:
        return self.get(detector, tenant, "mode", "enforce")

    def cooldowns(self) -> dict[str, int]:
        """Detector -> its configured cooldown (seconds)."""
        return {d: int(e["cooldown_s"]) for (d, t), e in self.entries.items() if t is None and "cooldown_s" in e}

    @property
    def drops(self) -> bool:
        """Whether any entry can drop findings (``off`` or a floor): the engine then filters them."""
        return any(e.get("mode") == "off" or "min_score" in e for e in self.entries.values())

    @property
    def budgets(self) -> bool:
        return any("budget_per_100k" in e for e in self.entries.values())

    def keep(self, detector: str, tenant: str, score: float) -> bool:
        """False for a finding the configuration drops (its detector is off, or it scores below the floor)."""
        if self.mode(detector, tenant) == "off":
            return False
        return score >= self.get(detector, tenant, "min_score", 0.0)
