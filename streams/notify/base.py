"""The ``Router`` protocol: where ``spyglass notify`` delivers alerts, and the error a delivery raises."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from schemas.errors import SpyglassError


class DeliveryError(SpyglassError):
    """The router did not take the alerts.

    ``permanent``: the router refused these alerts themselves (a malformed payload), so sending the same
    ones again cannot succeed; otherwise it was away, slow or failing and a later try can succeed.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@runtime_checkable
class Router(Protocol):
    """An on-call router that takes alerts in its own format (built by the implementation's ``payload``)."""

    name: str

    def post(self, payloads: list[dict[str, Any]]) -> None:
        """Deliver ``payloads`` at once; raise :class:`DeliveryError` if the router did not take them."""
