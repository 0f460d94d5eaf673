"""What monitoring hands up to therapy, which it may not import: new BP estimates and cuff readings,
to the one handler therapy registers as it loads (TherapyConfig.ready, therapy/receivers.py).

Escalation (crisis, low) hangs on this, so it is an explicit call, not a Django signal: the
handler's errors reach the caller (a worker's task retries, a request fails), and with no handler
registered the call fails instead of passing silently."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from monitoring.models import BPEstimate, CuffReading


class NewEvidenceHandler(Protocol):
    def estimates_stored(self, estimates: list[BPEstimate]) -> None:
        """Estimates (live and shadow) a worker has just stored for windows, after their
        transaction: the escalation check of each live one."""
        ...

    def cuff_reading_stored(self, reading: CuffReading) -> None:
        """A new cuff reading, inside the transaction that stores it: the patient's evaluation."""
        ...


_HANDLERS: list[NewEvidenceHandler] = []


def new_evidence_handler_register(handler: NewEvidenceHandler) -> None:
    """Register the handler (a second registration replaces the first)."""
    _HANDLERS[:] = [handler]


def new_evidence_handler() -> NewEvidenceHandler:
    """The registered handler; fails closed when there is none (escalation would silently stop)."""
    if not _HANDLERS:
        raise ImproperlyConfigured("no handler for new BP evidence is registered (is the therapy app installed?)")
    return _HANDLERS[0]


@checks.register()
def new_evidence_handler_check(**_: object) -> list[checks.CheckMessage]:
    """`manage.py check` (and every deploy's migrate) fails while nobody handles new evidence."""
    if _HANDLERS:
        return []
    return [checks.Error("No handler for new BP estimates and cuff readings: escalation would stop.",
                         hint="Install the therapy app (it registers one in TherapyConfig.ready).", id="monitoring.E001")]

