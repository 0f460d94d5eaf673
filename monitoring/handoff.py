"""What monitoring hands up to therapy, which it may not import: new BP estimates and cuff readings,
to the one handler therapy registers as it loads (TherapyConfig.ready, therapy/receivers.py).

Escalation (crisis, low) hangs on this, so it is an explicit call, not a Django signal: the
handler's errors reach the caller (a worker's task retries, a request fails), and with no handler
registered the call fails instead of passing silently."""
from __future__ import annotations

from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from monitoring.models import BPEstimate, CuffReading

H = TypeVar("H")


class NewEvidenceHandler(Protocol):
    def estimates_stored(self, estimates: list[BPEstimate]) -> None:
        """Estimates (live and shadow) a worker has just stored for windows, after their
        transaction: the escalation check of each live one."""
        ...

    def cuff_reading_stored(self, reading: CuffReading) -> None:
        """A new cuff reading, inside the transaction that stores it: the patient's evaluation."""
        ...


class HandlerSlot(Generic[H]):
    """The one handler an app above monitoring registers as it loads, for what monitoring may not
    import. Fails closed: asking an empty slot raises ImproperlyConfigured, and `manage.py check`
    (every deploy's migrate too) reports it under `check_id`."""

    def __init__(self, *, what: str, consequence: str, check_id: str) -> None:
        self._what, self._consequence, self._check_id = what, consequence, check_id
        self._handler: H | None = None

        def system_check(**_: object) -> list[checks.CheckMessage]:
            return self.check()

        checks.register(system_check)  # a function: the registry tags it, which a bound method refuses

    def register(self, handler: H) -> None:
        """Register the handler (a second registration replaces the first)."""
        self._handler = handler

    def get(self) -> H:
        if self._handler is None:
            raise ImproperlyConfigured(f"no {self._what} is registered (is the therapy app installed?): "
                                       f"{self._consequence}")
        return self._handler

    def check(self) -> list[checks.CheckMessage]:
        if self._handler is not None:
            return []
        return [checks.Error(f"No {self._what} is registered: {self._consequence}.",
                             hint="Install the therapy app (it registers one in TherapyConfig.ready).", id=self._check_id)]


new_evidence_handler: HandlerSlot[NewEvidenceHandler] = HandlerSlot(
    what="handler for new BP estimates and cuff readings", consequence="escalation would stop", check_id="monitoring.E001")
