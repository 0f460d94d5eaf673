"""Cross-cutting records: the append-only audit trail and the worker heartbeat."""
from __future__ import annotations

from typing import Any, NoReturn

from django.db import models


class AuditTrailIsAppendOnly(Exception):
    """Raised on any attempt to change or remove an audit event through the application."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("Audit events cannot be updated.")

    def delete(self) -> NoReturn:
        raise AuditTrailIsAppendOnly("Audit events cannot be deleted.")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("Audit events cannot be updated.")


class ActorType(models.TextChoices):
    USER = "user", "User"
    DEVICE = "device", "Device"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """Who did what to which object, when. Written by services in the same transaction as the change.

    Rows are never updated or deleted by the application: the model, its queryset and the admin
    refuse it, and a database trigger (see migration 0002) refuses UPDATE on every backend and
    DELETE on PostgreSQL.
    """

    at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=8, choices=ActorType.choices)
    actor_user = models.ForeignKey(
        "patients.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_device = models.ForeignKey(
        "patients.Device", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Who, in words, as it was at the time (a username can change later; the row must not).
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64)
    patient = models.ForeignKey(
        "patients.Patient", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    detail = models.JSONField(default=dict, blank=True)
    # Tamper evidence: each row carries the hash of the row before it and its own
    # (clinops.base.audit.row_hash); `manage.py verify_audit_trail` reports any break in the chain.
    prev_hash = models.CharField(max_length=64, default="", blank=True)
    row_hash = models.CharField(max_length=64, default="", blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.object_type}#{self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditTrailIsAppendOnly("Audit events cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("Audit events cannot be deleted.")


class WorkerHeartbeat(models.Model):
    """Last time a Celery worker ran the heartbeat task for a probe (beat, health check, test)."""

    probe = models.CharField(max_length=64, unique=True)
    worker = models.CharField(max_length=255)
    beat_at = models.DateTimeField()
    beats = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.probe} @ {self.worker}: {self.beat_at:%Y-%m-%d %H:%M:%S}"
