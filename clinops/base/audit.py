"""Writing the audit trail. Services call audit_record inside their own transaction."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Protocol, TypeGuard

from django.db import models, transaction
from django.utils import timezone

from clinops.base.models import ActorType, AuditEvent

# The system (a Celery task, a periodic job) acts as itself, not as a person.
SYSTEM = "system"
# PostgreSQL advisory-lock key that serialises appends to the audit chain.
AUDIT_CHAIN_LOCK = 7_341_001


# patients' User and Device as the trail sees them: this base module does not import the apps above it,
# so the actors are described by what the trail reads from them.
class UserActor(Protocol):
    @property
    def username(self) -> str: ...


class DeviceActor(Protocol):
    @property
    def serial(self) -> str: ...


Actor = UserActor | DeviceActor | str


# The actor's classes are those the trail's own foreign keys point to (patients' User and Device),
# which the stubs know only as some Model: these checks tell which kind of actor it then is.
def _is_user(actor: Actor) -> TypeGuard[UserActor]:
    return isinstance(actor, AuditEvent._meta.get_field("actor_user").related_model)


def _is_device(actor: Actor) -> TypeGuard[DeviceActor]:
    return isinstance(actor, AuditEvent._meta.get_field("actor_device").related_model)


def _describe_actor(actor: Actor) -> dict[str, Any]:
    if _is_user(actor):
        return {"actor_type": ActorType.USER, "actor_user": actor, "actor_label": actor.username}
    if _is_device(actor):
        return {
            "actor_type": ActorType.DEVICE,
            "actor_device": actor,
            "actor_label": f"device:{actor.serial}",
        }
    if actor == SYSTEM:
        return {"actor_type": ActorType.SYSTEM, "actor_label": SYSTEM}
    raise TypeError(f"Unknown audit actor: {actor!r}")


def row_hash(event: Any, prev_hash: str) -> str:
    """SHA-256 (hex) of an audit row's content chained to the previous row's hash: who, what,
    which object and patient, when (UTC, microseconds) and the detail, canonical JSON."""
    content = {
        "prev": prev_hash,
        "at": event.at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"),
        "actor_type": event.actor_type, "actor_user": event.actor_user_id, "actor_device": event.actor_device_id,
        "actor_label": event.actor_label, "action": event.action, "object_type": event.object_type,
        "object_id": str(event.object_id), "patient": event.patient_id, "detail": event.detail,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _chain_lock() -> None:
    """Appends take turns, so two transactions never chain to the same previous row. SQLite
    already serialises writers; PostgreSQL takes a transaction-scoped advisory lock."""
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_CHAIN_LOCK])


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: models.Model,
    patient: models.Model | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event. Must run inside the transaction of the change it records."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must be called inside the service's transaction.")
    _chain_lock()
    previous = AuditEvent.objects.order_by("-id").values_list("row_hash", flat=True).first() or ""
    # The model types `patient` as patients' Patient, a class this base layer may not name, not even
    # for type checking (lint-imports counts those imports too); Django checks the instance it is given.
    event = AuditEvent(  # type: ignore[misc]
        at=timezone.now(),
        action=action,
        object_type=target._meta.label,
        object_id=str(target.pk),
        patient=patient,
        detail=detail or {},
        **_describe_actor(actor),
    )
    # The detail as the database will give it back (JSON), so the hash can be recomputed from the row.
    event.detail = json.loads(json.dumps(event.detail, default=str))
    event.prev_hash, event.row_hash = previous, row_hash(event, previous)
    event.save()
    return event


def audit_trail_verify() -> list[str]:
    """Walk the whole trail in id order and recompute every hash; each break in words (empty when
    intact): a changed row, a removed row, or rows out of order."""
    problems: list[str] = []
    previous = ""
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != previous:
            problems.append(f"row {event.pk}: does not follow the row before it (a row was removed or inserted)")
        if event.row_hash != row_hash(event, event.prev_hash):
            problems.append(f"row {event.pk}: its content does not match its hash (changed after it was written)")
        previous = event.row_hash
    return problems
