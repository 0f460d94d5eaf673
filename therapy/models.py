"""Therapy plans, versioned: a change makes a new version; old suggestions keep the one they used."""
from __future__ import annotations

from django.db import models

from therapy.domain import Symptom

DEFAULT_SEEK_CARE_INSTRUCTIONS = (
    "Seek care now. If you have chest pain, shortness of breath, weakness or numbness, trouble speaking "
    "or seeing, or you fainted, call emergency services. Otherwise call your care team's urgent line "
    "today. Do not change your medicines on your own."
)


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
    # Home blood-pressure monitoring protocol: the cuff series that decides first.
    series_days = models.PositiveSmallIntegerField(default=7, help_text="Days of a home cuff series.")
    series_discard_first_day = models.BooleanField(default=True, help_text="The first day's readings run high.")
    series_min_readings = models.PositiveSmallIntegerField(default=12)
    series_min_days = models.PositiveSmallIntegerField(default=4)
    # When the wearable may support an automatic change: its agreement with this patient's cuff.
    agreement_period_days = models.FloatField(default=60.0)
    agreement_min_pairs = models.PositiveSmallIntegerField(default=5)
    agreement_max_bias_mmhg = models.FloatField(default=5.0)
    agreement_max_sd_mmhg = models.FloatField(default=8.0)
    exclusions = models.JSONField(default=list, help_text='[{"kind": "irregular rhythm", "detail": "atrial fibrillation"}]')
    seek_care_instructions = models.TextField(
        default=DEFAULT_SEEK_CARE_INSTRUCTIONS,
        help_text="What the patient is told to do in a crisis or on a red-flag symptom.")

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


# Reached the patient (automatically or by a clinician) and not yet acknowledged.
RELEASED_STATUSES = (SuggestionStatus.AUTO_RELEASED, SuggestionStatus.APPROVED, SuggestionStatus.MODIFIED)


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
    # A clinician's decision keeps the proposal beside the choice: modify sets to_rung to the rung
    # chosen, and proposed_rung / proposed_regimen keep what the engine proposed.
    proposed_rung = models.PositiveSmallIntegerField(null=True, blank=True)
    proposed_regimen = models.CharField(max_length=255, blank=True)
    decided_by = models.ForeignKey("patients.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    @property
    def released_at(self):
        """When the change reached the patient: the clinician's decision, or its creation when released automatically."""
        return self.decided_at or self.created_at

    @property
    def was_modified(self) -> bool:
        """The clinician released another rung than the engine proposed."""
        return self.proposed_rung is not None and self.proposed_rung != self.to_rung

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Pending suggestions never pile up: one undecided suggestion per patient at a time.
            models.UniqueConstraint(fields=["patient"], condition=models.Q(status="pending_review"),
                                    name="suggestion_one_pending_per_patient"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.from_rung}->{self.to_rung} for patient {self.patient_id} ({self.status})"


class DoseLog(models.Model):
    """The patient's answer for one scheduled dose (drug, day, intake slot): taken or missed.
    First answer stands; an identical repeat is accepted, a contradicting one refused."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="dose_logs")
    day = models.DateField(help_text="The day the dose was due (the patient's calendar day).")
    drug = models.CharField(max_length=80)
    dose_mg = models.FloatField()
    slot = models.PositiveSmallIntegerField(help_text="Intake of the day, 1-based (2 = second of twice daily).")
    taken = models.BooleanField()
    logged_at = models.DateTimeField(auto_now_add=True)
    logged_by = models.ForeignKey("patients.User", on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-day", "slot", "drug"]
        constraints = [models.UniqueConstraint(fields=["patient", "day", "drug", "slot"], name="dose_log_once_per_dose")]
        indexes = [models.Index(fields=["patient", "day"])]

    def __str__(self) -> str:
        return f"{self.drug} {self.dose_mg:g} mg #{self.slot} on {self.day}: {'taken' if self.taken else 'missed'}"


class ReportKind(models.TextChoices):
    SYMPTOM = "symptom", "Symptom"
    SIDE_EFFECT = "side_effect", "Side effect"


class SymptomReport(models.Model):
    """A symptom or side effect the patient (or a clinician for them) reported. Red flags, low-
    pressure symptoms and side effects raise an escalation; never edited."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="symptom_reports")
    kind = models.CharField(max_length=12, choices=ReportKind.choices)
    symptom = models.CharField(max_length=40, blank=True, choices=[(s.value, s.value) for s in Symptom],
                               help_text="For a symptom: one from the list (\"other symptom\" with a description).")
    drug = models.CharField(max_length=80, blank=True, help_text="For a side effect: the drug suspected, if known.")
    detail = models.TextField(blank=True, max_length=2000)
    reported_at = models.DateTimeField(auto_now_add=True, db_index=True)
    reported_by = models.ForeignKey("patients.User", on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-reported_at"]

    def __str__(self) -> str:
        what = self.symptom if self.kind == ReportKind.SYMPTOM else f"side effect {self.detail[:30]}"
        return f"{what} reported by patient {self.patient_id}"


class EscalationStep(models.TextChoices):
    CONTACTED = "contacted", "Patient contacted"
    ADVISED = "advised", "Patient advised"
    RESOLVED = "resolved", "Resolved"


class EscalationAction(models.Model):
    """What a clinician did about an escalation, in order: contacting and advising the patient
    keep it in the queue; resolving it closes it (and its alerts). Never edited."""

    suggestion = models.ForeignKey(Suggestion, on_delete=models.PROTECT, related_name="escalation_actions")
    step = models.CharField(max_length=12, choices=EscalationStep.choices)
    note = models.TextField(max_length=2000, help_text="What was said or done, for the care team.")
    by = models.ForeignKey("patients.User", on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.get_step_display()} ({self.suggestion_id})"


class Alert(models.Model):
    """An escalation made visible: to the care team (the counter and the queue) and, when the
    patient must seek care, to the patient with the plan's instructions. One open alert per patient
    and cause: a new episode of the same cause updates it rather than raising a second one. Closed
    when a clinician decides the escalation it belongs to."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="alerts")
    cause = models.CharField(max_length=24, help_text="The escalation kind, e.g. crisis, red-flag symptom.")
    message = models.TextField(help_text="For clinicians: what raised it, in words.")
    seek_care = models.BooleanField(default=False)
    patient_message = models.TextField(blank=True, help_text="Shown to the patient (the plan's seek-care instructions).")
    suggestion = models.ForeignKey(Suggestion, on_delete=models.PROTECT, related_name="alerts")
    raised_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey("patients.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    snoozed_until = models.DateTimeField(null=True, blank=True,
                                         help_text="Out of the queue and the counter until then (at most 7 days); "
                                                   "back at once if the patient worsens.")
    snooze_reason = models.CharField(max_length=500, blank=True)
    snoozed_by = models.ForeignKey("patients.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-raised_at"]
        constraints = [models.UniqueConstraint(fields=["patient", "cause"], condition=models.Q(closed_at__isnull=True),
                                               name="alert_one_open_per_patient_and_cause")]

    def __str__(self) -> str:
        return f"{self.cause} alert for patient {self.patient_id}{'' if self.closed_at is None else ' (closed)'}"


class LatestEvaluation(models.Model):
    """The outcome of the patient's latest therapy evaluation, so a hold is on record with the rule
    that held it ("not enough data: 5 estimates on 2 distinct days"), not only in a log line.
    Suggestions are their own permanent records; this row is overwritten by each evaluation."""

    patient = models.OneToOneField("patients.Patient", on_delete=models.PROTECT, related_name="latest_evaluation")
    evaluated_at = models.DateTimeField(db_index=True)  # the due sweep reads the oldest first
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.PROTECT, related_name="+")
    outcome = models.CharField(max_length=16, help_text="hold, or the suggestion's status.")
    reasons = models.JSONField(default=list)
    evidence = models.JSONField(default=dict)
    suggestion = models.ForeignKey(Suggestion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    policy_version = models.CharField(max_length=32)

    def __str__(self) -> str:
        return f"{self.outcome} for patient {self.patient_id} at {self.evaluated_at:%Y-%m-%d %H:%M}"
