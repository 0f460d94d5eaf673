"""Therapy plans, versioned: a change makes a new version; old suggestions keep the one they used."""
from __future__ import annotations

from django.db import models


class PlanVersion(models.Model):
    """One version of a patient's plan: target, ladder and current rung, titration rules and the
    clinician's autonomy bounds. Never edited: a change is a new version with its reason."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="plan_versions")
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey("patients.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                   help_text="Empty when the system made it (an automatically released step).")
    reason = models.TextField()
    # Target (home mean must be below both) and the ladder.
    target_sbp_mmhg = models.FloatField(default=135.0)
    target_dbp_mmhg = models.FloatField(default=85.0)
    ladder_name = models.CharField(max_length=120)
    ladder = models.JSONField(help_text='Rungs, mildest first: [[{"drug", "dose_mg", "frequency"}, ...], ...]')
    current_rung = models.PositiveSmallIntegerField(help_text="0-based index into the ladder.")
    # Titration rules.
    look_back_days = models.FloatField(default=7.0)
    min_usable_estimates = models.PositiveIntegerField(default=12)
    min_distinct_days = models.PositiveIntegerField(default=4)
    min_days_between_changes = models.FloatField(default=28.0)
    step_down_sbp_mmhg = models.FloatField(default=110.0)
    # Autonomy bounds: nothing is automatic unless the clinician allows it.
    auto_step_up = models.BooleanField(default=False)
    auto_step_down = models.BooleanField(default=False)
    max_auto_rung = models.PositiveSmallIntegerField(default=0)
    max_interval_halfwidth_mmhg = models.FloatField(default=10.0)
    min_usable_window_share = models.FloatField(default=0.7)
    calibration_max_age_days = models.FloatField(default=28.0)
    exclusions = models.JSONField(default=list, help_text='[{"kind": "irregular rhythm", "detail": "atrial fibrillation"}]')

    class Meta:
        ordering = ["patient", "-version"]
        constraints = [models.UniqueConstraint(fields=["patient", "version"], name="plan_unique_patient_version")]

    def __str__(self) -> str:
        return f"plan v{self.version} of patient {self.patient_id}"


class SuggestionKind(models.TextChoices):
    STEP_UP = "step_up", "Step up one rung"
    STEP_DOWN = "step_down", "Step down one rung"
    ESCALATE = "escalate", "Escalate to a clinician"


class SuggestionStatus(models.TextChoices):
    AUTO_RELEASED = "auto_released", "Released to the patient automatically"
    PENDING_REVIEW = "pending_review", "Waiting for clinician review"
    APPROVED = "approved", "Approved by a clinician"
    MODIFIED = "modified", "Modified by a clinician"
    REJECTED = "rejected", "Rejected by a clinician"
    SUPERSEDED = "superseded", "Superseded by a newer suggestion"
    ACKNOWLEDGED = "acknowledged", "Acknowledged by the patient"


class Suggestion(models.Model):
    """A proposed dosage step with its evidence and the routing decision, with every reason."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="suggestions")
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.PROTECT, related_name="suggestions")
    kind = models.CharField(max_length=12, choices=SuggestionKind.choices)
    from_rung = models.PositiveSmallIntegerField()
    to_rung = models.PositiveSmallIntegerField()
    from_regimen = models.CharField(max_length=255)
    to_regimen = models.CharField(max_length=255)
    evidence = models.JSONField(help_text="Aggregate BP with interval, n estimates, days covered, flags.")
    estimate_ids = models.JSONField(default=list)
    model_versions = models.JSONField(default=list, help_text="BP model versions behind the estimates.")
    policy_version = models.CharField(max_length=32)
    auto_release = models.BooleanField()
    routing_reasons = models.JSONField(default=list, help_text="Every failing bound, in words (empty when released).")
    proposal_reasons = models.JSONField(default=list)
    escalations = models.JSONField(default=list)
    urgent = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=SuggestionStatus.choices, db_index=True)
    superseded_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Pending suggestions never pile up: one undecided suggestion per patient at a time.
            models.UniqueConstraint(fields=["patient"], condition=models.Q(status="pending_review"),
                                    name="suggestion_one_pending_per_patient"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.from_rung}->{self.to_rung} for patient {self.patient_id} ({self.status})"
