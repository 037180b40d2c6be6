"""Detector configuration as code: a YAML file (``SPYGLASS_DETECTORS_FILE``) that sets, per detector and
optionally per tenant, its mode (``enforce``, ``shadow``, ``off``) and parameters; validated at load with
errors that name the key, turned into the engine's :class:`~detectors.tuning.Tuning`.

Example::

    version: 1
    detectors:
      data.volume_spike:
        mode: enforce
        budget_per_100k: 2      # this detector's false-alarm budget (alerts per 100k of a tenant's events)
        min_score: 0.5          # floor: findings scoring below raise nothing
        cooldown_s: 7200        # hits of one entity less than this apart make one alert (per detector only)
        tenants:
          acme: {mode: shadow}  # a trial in one tenant: stored with mode = shadow, never published or routed
      api.new_client:
        mode: off
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from detectors.families import REGISTRY
from detectors.tuning import Tuning
from schemas.errors import ConfigError
from streams.suppression import key_path, read_config, yaml_mapping


class TenantEntry(BaseModel):
    """A detector's settings in one tenant (everything but the cooldown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["enforce", "shadow", "off"] | None = None
    budget_per_100k: float | None = Field(None, ge=0, le=100_000)
    min_score: float | None = Field(None, ge=0, le=1)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class DetectorEntry(TenantEntry):
    """A detector's settings for every tenant, and per tenant."""

    cooldown_s: int | None = Field(None, ge=0, le=30 * 86_400)
    tenants: dict[str, TenantEntry] = Field(default_factory=dict)


class DetectorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    detectors: dict[str, DetectorEntry] = Field(default_factory=dict)


def engine_detectors() -> list[str]:
    """The detectors the engine raises (the ones a file may configure)."""
    return sorted(name for name, spec in REGISTRY.catalog().items() if spec.engine)


def parse(text: str, path: Path | str = "<detectors>") -> Tuning:
    """The tuning a YAML text gives; :class:`ConfigError` naming the key when it does not validate."""
    raw = yaml_mapping(text, path, "version and detectors")
    try:
        doc = DetectorFile.model_validate(raw)
    except ValidationError as exc:
        parts = [f"{key_path(_dotted(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(dict.fromkeys(parts))) from None
    known = set(engine_detectors())
    entries: dict[tuple[str, str | None], dict[str, Any]] = {}
    for name, entry in doc.detectors.items():
        if name not in known:
            raise ConfigError(f"{path}: detectors.{name}: unknown detector (known: {', '.join(sorted(known))})")
        entries[(name, None)] = entry.model_dump(exclude_none=True, exclude={"tenants"})
        for tenant, t in entry.tenants.items():
            entries[(name, tenant)] = t.model_dump(exclude_none=True)
    return Tuning({k: v for k, v in entries.items() if v})


def _dotted(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Detector names hold dots: keep them one key (``detectors.data.volume_spike`` reads as written)."""
    return tuple(part for part in loc if part not in ("literal['enforce','shadow','off']",))


def load(path: Path) -> Tuning:
    """The tuning of ``path``; a missing file is the defaults (every detector enforced, the engine's parameters)."""
    text = read_config(path)
    return Tuning() if text is None else parse(text, path)
