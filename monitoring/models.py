"""Signal windows uploaded by devices, and what the pipeline made of them."""
from __future__ import annotations

from django.db import models


class WindowStatus(models.TextChoices):
    RECEIVED = "received", "Received, waiting for the pipeline"
    PROCESSED = "processed", "Processed: usable"
    REJECTED = "rejected", "Processed: unusable (see reasons)"
    FAILED = "failed", "Processing failed permanently"


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
    raw = models.BinaryField(help_text="Compressed .npz of the channels exactly as received.")
    raw_sha256 = models.CharField(max_length=64)
    raw_bytes = models.PositiveIntegerField()
    firmware = models.CharField(max_length=40, help_text="Device firmware at upload time.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=12, choices=WindowStatus.choices, default=WindowStatus.RECEIVED, db_index=True)
    enqueued_at = models.DateTimeField(help_text="When the window was last sent to the processing queue.")
    processed_at = models.DateTimeField(null=True, blank=True)
    failure = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "sequence"], name="window_unique_device_sequence"),
        ]
        indexes = [
            models.Index(fields=["patient", "recorded_at"]),
            models.Index(fields=["status", "enqueued_at"]),
        ]
        ordering = ["recorded_at", "id"]

    def __str__(self) -> str:
        return f"window {self.pk} ({self.device_id}#{self.sequence})"

    @property
    def idempotency_key(self) -> str:
        return f"{self.device.serial}:{self.sequence}"


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

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["window", "pipeline_version"], name="analysis_unique_window_version"),
        ]

    def __str__(self) -> str:
        return f"analysis of window {self.window_id} ({self.pipeline_version})"
