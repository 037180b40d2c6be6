"""The detector catalogue: stable names, what they watch, and the techniques they map to.

Derived from the registry (``detectors.families.REGISTRY``): each family declares its detectors.
Tags follow MITRE ATLAS (``atlas:AML.T...``) and the OWASP Top 10 for LLM applications
2025 (``owasp-llm:LLM..``) where one fits.
"""

from __future__ import annotations

from detectors.families import REGISTRY
from detectors.registry import Spec

__all__ = ["CATALOG", "Spec"]

CATALOG: dict[str, Spec] = REGISTRY.catalog()
