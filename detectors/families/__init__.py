"""The detector families, one module each; ``REGISTRY`` lists them in the order their stages run."""

from __future__ import annotations

from detectors.families import agent, api, behaviour, data, risk
from detectors.registry import Registry

REGISTRY = Registry([api.FAMILY, behaviour.FAMILY, data.FAMILY, agent.FAMILY, risk.FAMILY])
