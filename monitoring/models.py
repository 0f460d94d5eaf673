"""Signal windows uploaded by devices, and what the pipeline made of them."""
from __future__ import annotations

import datetime as dt

from django.db import models
from django.utils import timezone


class WindowStatus(models.TextChoices):
    RECEIVED = "received", "Received, waiting for the pipeline"
    PROCESSED = "processed", "Processed: usable"
    REJECTED = "rejected", "Processed: unusable (see reasons)"
    FAILED = "failed", "Processing failed permanently"


# The pipeline is done with a window in these states (nothing will read its raw bytes again on its own).
FINAL_STATUSES = (WindowStatus.PROCESSED, WindowStatus.REJECTED, WindowStatus.FAILED)


class Encoding(models.TextChoices):
    JSON = "json", "JSON arrays"
    COMPACT = "compact", "base64 int16/float32"


class SignalWindow(models.Model):
    """One synchronised ECG + PPG window as a device sent it; the raw bytes are kept for recomputation."""

    device = models.ForeignKey("patients.Device", on_delete=models.PROTECT, related_name="windows")
    # The patient the device was bound to at upload time; kept even if the device is revoked later.
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="windows")
    sequence = models.PositiveBigIntegerField(help_text="The device's own sequence number (idempotency key).")
    recorded_at = models.DateTimeField(db_index=True, help_text="Device timestamp (UTC) of the first sample.")
    duration_s = models.FloatField()
    ecg_fs = models.FloatField(help_text="ECG sampling rate (Hz).")
    ppg_fs = models.FloatField(help_text="PPG sampling rate (Hz).")
    encoding = models.CharField(max_length=8, choices=Encoding.choices)
    raw = models.BinaryField(help_text=".npz of the channels exactly as received (monitoring/ingest/encoding.py).")
    raw_sha256 = models.CharField(max_length=64)
    raw_bytes = models.PositiveIntegerField()
    firmware = models.CharField(max_length=40, help_text="Device firmware at upload time.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=12, choices=WindowStatus.choices, default=WindowStatus.RECEIVED, db_index=True)
    enqueued_at = models.DateTimeField(help_text="When the window was last sent to the processing queue.")
    processed_at = models.DateTimeField(null=True, blank=True)
    failure = models.CharField(max_length=255, blank=True)
    # Retention (monitoring/ingest/retention.py): the raw bytes go after RAW_WINDOW_RETENTION_DAYS; the
    # row, its SHA-256, size, analyses and estimates stay.
    raw_purged_at = models.DateTimeField(null=True, blank=True,
                                         help_text="When the raw signal was dropped (empty: still stored).")
    raw_kept_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When a purge found a suggestion resting on this window: its raw signal is kept for good.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "sequence"], name="window_unique_device_sequence"),
            # A wearable records one window at a time: a second one starting at the same instant is
            # the same window sent again (e.g. under a new sequence after a counter reset).
            models.UniqueConstraint(fields=["device", "recorded_at"], name="window_unique_device_start"),
        ]
        indexes = [
            models.Index(fields=["patient", "recorded_at"]),
            models.Index(fields=["status", "enqueued_at"]),
            # What the retention purge has still to look at, oldest first. Only windows whose
            # processing is over enter it (an insert does not touch it, so ingest pays nothing),
            # and each leaves it once purged or kept, so a run never walks the purged history.
            models.Index(fields=["recorded_at", "id"], name="window_raw_to_examine",
                         condition=models.Q(raw_purged_at__isnull=True, raw_kept_at__isnull=True,
                                            status__in=FINAL_STATUSES)),
        ]
        ordering = ["recorded_at", "id"]

    def __str__(self) -> str:
        return f"window {self.pk} ({self.device_id}#{self.sequence})"

    @property
    def idempotency_key(self) -> str:
        return f"{self.device.serial}:{self.sequence}"

    @property
    def raw_signal(self) -> str:
        """Whether the raw bytes are still here, in words (admin, API)."""
        if self.raw_purged_at is not None:
            return f"raw signal purged on {timezone.localtime(self.raw_purged_at):%Y-%m-%d} (SHA-256 and size kept)"
        return f"stored ({self.raw_bytes} bytes)"


class WindowAnalysis(models.Model):
    """The pipeline's verdict and features for one window, per pipeline version (never overwritten)."""

    window = models.ForeignKey(SignalWindow, on_delete=models.PROTECT, related_name="analyses")
    pipeline_version = models.CharField(max_length=32)
    usable = models.BooleanField()
    reasons = models.JSONField(default=list, help_text="Quality reason codes when unusable.")
    issues = models.JSONField(default=list, help_text="Each issue in words, with its channel.")
    features = models.JSONField(default=dict, help_text="Window aggregates (median, IQR, beat count).")
    beat_count = models.PositiveIntegerField(default=0)
    heart_rate_bpm = models.FloatField(null=True, blank=True)
    pat_foot_ms = models.FloatField(null=True, blank=True, help_text="Median pulse arrival time to PPG foot (ms).")
    processing_ms = models.FloatField(help_text="Wall time of decode + analysis (ms).")
    created_at = models.DateTimeField(auto_now_add=True)
    # Not a field: True on the analyses windows_process has just made, whose estimates none can
    # have yet and whose verdicts this worker counts; an analysis read back, or another worker's, is not.
    created_now: bool = False

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["window", "pipeline_version"], name="analysis_unique_window_version"),
        ]

    def __str__(self) -> str:
        return f"analysis of window {self.window_id} ({self.pipeline_version})"


class ModelStatus(models.TextChoices):
    CANDIDATE = "candidate", "Candidate (trained, not in use)"
    ACTIVE = "active", "Active (its estimates feed therapy)"
    RETIRED = "retired", "Retired (was active)"


class BPModelVersion(models.Model):
    """A trained BP model in our own registry: what it learnt from, how good it is, who let it in.

    The skops file is kept in the database (every worker machine reads the same bytes) and is
    verified against its SHA-256 before every load.
    """

    version = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=12, choices=ModelStatus.choices, default=ModelStatus.CANDIDATE, db_index=True)
    shadow = models.BooleanField(default=False, help_text="Runs beside the active model; its estimates never feed therapy.")
    created_at = models.DateTimeField(auto_now_add=True)
    trained_by = models.CharField(max_length=150, help_text="Who (or which command) trained it.")
    approved_by = models.ForeignKey("patients.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)
    previous_active = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                        help_text="The version it replaced, for a one-step rollback.")
    code_version = models.CharField(max_length=64, blank=True, help_text="git commit of the training code, when known.")
    data_fingerprint = models.JSONField(help_text="SHA-256 of each record file and the train/validation/test split.")
    features = models.JSONField(help_text="Feature names, in model order.")
    hyperparameters = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, help_text="Validation and test reports, with the baselines.")
    interval_level = models.FloatField(default=0.9)
    interval_sbp_mmhg = models.FloatField(help_text="Half-width of the prediction interval (mmHg), split-conformal.")
    interval_dbp_mmhg = models.FloatField()
    pipeline_version = models.CharField(max_length=32, help_text="Signal pipeline whose features it was trained on.")
    artifact = models.BinaryField(help_text="The skops file.")
    artifact_sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="active"), name="one_active_bp_model"),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.status})"


class CuffSource(models.TextChoices):
    PATIENT = "patient", "Entered by the patient"
    CLINICIAN = "clinician", "Entered by a clinician"
    DEVICE = "device", "Uploaded by a connected cuff"


class Arm(models.TextChoices):
    LEFT = "left", "Left arm"
    RIGHT = "right", "Right arm"


class Position(models.TextChoices):
    SITTING = "sitting", "Sitting"
    STANDING = "standing", "Standing"
    LYING = "lying", "Lying"


class CuffReading(models.Model):
    """An upper-arm cuff measurement (mmHg): the home series that decides titration first, the
    calibration of the wearable, and the prospective test of its estimates."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="cuff_readings")
    measured_at = models.DateTimeField(db_index=True)
    sbp_mmhg = models.FloatField()
    dbp_mmhg = models.FloatField()
    pulse_bpm = models.FloatField(null=True, blank=True)
    arm = models.CharField(max_length=8, choices=Arm.choices, blank=True)
    position = models.CharField(max_length=10, choices=Position.choices, blank=True)
    cuff = models.ForeignKey("patients.Device", null=True, blank=True, on_delete=models.PROTECT, related_name="cuff_readings",
                             help_text="The cuff that measured (none: a cuff not registered, never validated).")
    source = models.CharField(max_length=12, choices=CuffSource.choices)
    entered_by = models.ForeignKey("patients.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-measured_at"]
        constraints = [
            # A retried upload or double submit is the same reading, not a second one.
            models.UniqueConstraint(fields=["patient", "measured_at", "source"], name="cuff_unique_patient_time_source"),
        ]

    def __str__(self) -> str:
        return f"{self.sbp_mmhg:.0f}/{self.dbp_mmhg:.0f} mmHg at {self.measured_at:%Y-%m-%d %H:%M}"


class AgreementPair(models.Model):
    """A prospective test of the patient's wearable: a cuff reading against the live estimates of
    windows recorded in the minutes before it, none calibrated on that reading. Error = estimate -
    cuff (mmHg). Rebuilt (never edited by hand) as late estimates arrive."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="agreement_pairs")
    cuff_reading = models.OneToOneField(CuffReading, on_delete=models.PROTECT, related_name="agreement_pair")
    measured_at = models.DateTimeField(help_text="= the cuff reading's time.")
    estimate_ids = models.JSONField(default=list)
    model_versions = models.JSONField(default=list)
    n_estimates = models.PositiveIntegerField()
    estimate_sbp_mmhg = models.FloatField(help_text="Mean of the estimates.")
    estimate_dbp_mmhg = models.FloatField()
    cuff_sbp_mmhg = models.FloatField()
    cuff_dbp_mmhg = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-measured_at"]
        indexes = [models.Index(fields=["patient", "measured_at"])]

    def __str__(self) -> str:
        return f"agreement pair of patient {self.patient_id} at {self.measured_at:%Y-%m-%d %H:%M}"


# A calibration pairs a cuff reading with the usable windows recorded this close to it (the selectors'
# "waiting for an estimate" and the calibration itself, monitoring/bp/cuff_calibration.py, both use it).
CALIBRATION_PAIRING = dt.timedelta(minutes=10)


class Calibration(models.Model):
    """A cuff reading paired with the usable windows recorded within +/- 10 min of it."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="calibrations")
    cuff_reading = models.OneToOneField(CuffReading, on_delete=models.PROTECT, related_name="calibration")
    calibrated_at = models.DateTimeField(db_index=True, help_text="= the cuff reading's time.")
    windows = models.ManyToManyField(SignalWindow, related_name="calibrations")
    features = models.JSONField(help_text="Mean features of the paired windows: the patient's reference point.")
    pipeline_version = models.CharField(max_length=32, help_text="Signal pipeline that computed those features.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-calibrated_at"]

    def __str__(self) -> str:
        return f"calibration of patient {self.patient_id} at {self.calibrated_at:%Y-%m-%d %H:%M}"


class BPEstimate(models.Model):
    """A calibrated BP estimate for one window, with its interval and full lineage."""

    window = models.ForeignKey(SignalWindow, on_delete=models.PROTECT, related_name="estimates")
    analysis = models.ForeignKey(WindowAnalysis, on_delete=models.PROTECT, related_name="estimates")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="bp_estimates")
    model_version = models.ForeignKey(BPModelVersion, on_delete=models.PROTECT, related_name="estimates")
    calibration = models.ForeignKey(Calibration, on_delete=models.PROTECT, related_name="estimates")
    recorded_at = models.DateTimeField(db_index=True, help_text="The window's time.")
    sbp_mmhg = models.FloatField()
    dbp_mmhg = models.FloatField()
    sbp_low_mmhg = models.FloatField()
    sbp_high_mmhg = models.FloatField()
    dbp_low_mmhg = models.FloatField()
    dbp_high_mmhg = models.FloatField()
    interval_level = models.FloatField()
    shadow = models.BooleanField(default=False, help_text="From a shadow model: stored for comparison, never used for therapy.")
    calibration_age_days = models.FloatField()
    flags = models.JSONField(default=list, help_text="Why this estimate may not support an automatic release.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["window", "model_version"], name="estimate_unique_window_model"),
            # One estimate per window may feed therapy, whichever model was active when it was made.
            models.UniqueConstraint(fields=["window"], condition=models.Q(shadow=False), name="estimate_one_live_per_window"),
        ]
        indexes = [
            models.Index(fields=["patient", "shadow", "recorded_at"]),
            # What arrived since a patient's latest therapy evaluation (the pipeline report's
            # evaluation figure): by arrival, as a late upload carries old recording times.
            models.Index(fields=["patient", "created_at"], condition=models.Q(shadow=False),
                         name="estimate_live_patient_arrival"),
        ]

    def __str__(self) -> str:
        return f"{self.sbp_mmhg:.0f}/{self.dbp_mmhg:.0f} mmHg (window {self.window_id}, {self.model_version_id})"

    @property
    def supports_automatic_release(self) -> bool:
        return not self.shadow and not self.flags


class EstimateDayTotals(models.Model):
    """Running totals of a patient's live estimates of one model version on one UTC day, added to in
    the transaction that stores the estimates (monitoring.bp.estimation.estimate_day_totals_add), so that
    an evaluation reads a week as seven rows (therapy.domain.EstimateDay) instead of ~2,016
    estimates. Only days without a crisis- or low-level estimate are ever read as totals."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.CASCADE, related_name="estimate_days")
    model_version = models.ForeignKey(BPModelVersion, on_delete=models.PROTECT, related_name="estimate_days")
    day = models.DateField(help_text="UTC day of the estimates' recording times.")
    n = models.PositiveIntegerField()
    sum_sbp_mmhg = models.FloatField()
    sum_dbp_mmhg = models.FloatField()
    sum_sq_sbp_mmhg2 = models.FloatField()
    sum_sq_dbp_mmhg2 = models.FloatField()
    min_sbp_mmhg = models.FloatField()
    max_sbp_mmhg = models.FloatField()
    min_dbp_mmhg = models.FloatField()
    max_dbp_mmhg = models.FloatField()
    sum_sbp_halfwidth_mmhg = models.FloatField()
    sum_dbp_halfwidth_mmhg = models.FloatField()
    min_interval_level = models.FloatField()
    n_flagged = models.PositiveIntegerField()
    flags = models.JSONField(default=list, help_text="Every distinct flag of the day's estimates.")
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["patient", "day", "model_version"], name="estimate_day_totals_unique")]
        verbose_name_plural = "estimate day totals"

    def __str__(self) -> str:
        return f"patient {self.patient_id} {self.day}: {self.n} estimates"


class MonitoringReportKind(models.TextChoices):
    ACCURACY = "accuracy", "Accuracy in production"
    DRIFT = "drift", "Data drift"
    PIPELINE = "pipeline", "Pipeline health"
    AGREEMENT = "agreement", "Clinician-AI agreement"
    SUBGROUPS = "subgroups", "Accuracy by subgroup"
    POPULATION = "population", "Population report"


class MonitoringReport(models.Model):
    """One computed monitoring report (by beat), stored so pages read it instead of scanning.
    scope: what it covers, e.g. "all", "model:<version>", "team:<id>"."""

    kind = models.CharField(max_length=16, choices=MonitoringReportKind.choices)
    scope = models.CharField(max_length=120, default="all")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    computed_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField()

    class Meta:
        ordering = ["-computed_at"]
        indexes = [models.Index(fields=["kind", "scope", "-computed_at"])]

    def __str__(self) -> str:
        return f"{self.kind} report for {self.scope} at {self.computed_at:%Y-%m-%d %H:%M}"


class AlertSeverity(models.TextChoices):
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class OperatorAlert(models.Model):
    """A monitoring signal past its threshold, for operators: stored, shown on the model-health
    page and logged. One open alert per (signal, scope); resolved when the signal is back."""

    signal = models.CharField(max_length=80, help_text='e.g. "accuracy.sbp_mae_mmhg", "drift.pat_foot_ms_median".')
    scope = models.CharField(max_length=120, default="all")
    severity = models.CharField(max_length=8, choices=AlertSeverity.choices)
    message = models.TextField()
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    report = models.ForeignKey(MonitoringReport, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    raised_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at"]
        constraints = [models.UniqueConstraint(fields=["signal", "scope"], condition=models.Q(resolved_at__isnull=True),
                                               name="operator_alert_one_open_per_signal_scope")]

    def __str__(self) -> str:
        return f"{self.severity} {self.signal} ({self.scope})"


class AutonomySuspension(models.Model):
    """Automatic releases suspended for patients whose estimates come from `model_version`, because
    an accuracy or drift alert fired; in force until a clinician lifts it (audited both ways)."""

    model_version = models.ForeignKey(BPModelVersion, on_delete=models.PROTECT, related_name="suspensions")
    reason = models.TextField()
    alert = models.ForeignKey(OperatorAlert, null=True, blank=True, on_delete=models.PROTECT, related_name="suspensions")
    created_at = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey("patients.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    lift_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["model_version"], condition=models.Q(lifted_at__isnull=True),
                                               name="suspension_one_in_force_per_model")]

    def __str__(self) -> str:
        return f"automatic releases suspended for {self.model_version_id}{'' if self.lifted_at is None else ' (lifted)'}"


class TrainingSet(models.Model):
    """A versioned, immutable training set built from production: cuff-paired windows (features,
    the calibration they are relative to, the cuff reading as reference) and the clinicians'
    decisions of the period. `train_bp_model --production-set VERSION` adds its windows to the
    training split only; validation, test and the promotion gates stay those of the shipped data."""

    version = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    n_samples = models.PositiveIntegerField()
    n_patients = models.PositiveIntegerField()
    n_decisions = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, help_text="Of the canonical JSON of `content`.")
    content = models.JSONField(help_text='{"samples": [...], "decisions": [...]}; patients pseudonymised.')

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training set {self.version} ({self.n_samples} windows)"
