"""Writing the audit trail. Services call audit_record inside their own transaction."""
from __future__ import annotations

from typing import Any, Union

from django.db import models, transaction
from django.utils import timezone

from clinops.models import ActorType, AuditEvent

# The system (a Celery task, a periodic job) acts as itself, not as a person.
SYSTEM = "system"

Actor = Union["patients.models.User", "patients.models.Device", str]  # noqa: F821


def _describe_actor(actor: Actor) -> dict[str, Any]:
    from patients.models import Device, User

    if isinstance(actor, User):
        return {"actor_type": ActorType.USER, "actor_user": actor, "actor_label": actor.username}
    if isinstance(actor, Device):
        return {
            "actor_type": ActorType.DEVICE,
            "actor_device": actor,
            "actor_label": f"device:{actor.serial}",
        }
    if actor == SYSTEM:
        return {"actor_type": ActorType.SYSTEM, "actor_label": SYSTEM}
    raise TypeError(f"Unknown audit actor: {actor!r}")


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: models.Model,
    patient: "patients.models.Patient | None" = None,  # noqa: F821
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event. Must run inside the transaction of the change it records."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must be called inside the service's transaction.")
    return AuditEvent.objects.create(
        at=timezone.now(),
        action=action,
        object_type=target._meta.label,
        object_id=str(target.pk),
        patient=patient,
        detail=detail or {},
        **_describe_actor(actor),
    )
