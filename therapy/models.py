"""Therapy plans, versioned: a change makes a new version; old suggestions keep the one they used."""
from __future__ import annotations

from django.db import models


class PlanVersion(models.Model):
    """One version of a patient's plan: target, ladder and current rung, titration rules and the
    clinician's autonomy bounds. Never edited: a change is a new version with its reason."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="plan_versions")
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey("patients.User", on_delete=models.PROTECT, related_name="+")
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
