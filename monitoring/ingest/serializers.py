"""Input and output shapes of the device window API, with field-level validation."""
from __future__ import annotations

import math

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField, empty

from monitoring.ingest import rules
from monitoring.ingest.encoding import DTYPES, Channel, EncodingError, decode_compact, decode_json_samples
from monitoring.models import SignalWindow, WindowAnalysis


@extend_schema_field({"type": "string", "format": "byte"})
class Base64Field(serializers.Field):
    """A base64 string. Not a CharField: its per-character surrogate check costs ~1 ms per window,
    and b64decode(validate=True) refuses anything but the base64 alphabet anyway."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("must be a base64 string")
        return data

    def to_representation(self, value):
        return value


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that must state its zone: a device clock without one is ambiguous."""

    def to_internal_value(self, value):
        try:
            parsed = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:  # well formed but impossible (e.g. 12:99): DRF's own parse answers "invalid"
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            raise serializers.ValidationError("must carry a time zone (UTC, e.g. 2026-11-23T10:00:00Z)")
        return super().to_internal_value(value)


class ChannelInput(serializers.Serializer):
    """One channel: `samples` (JSON numbers, null = missing) or `data` + `dtype` (base64 little-endian)."""

    fs = serializers.FloatField(min_value=rules.MIN_FS_HZ, max_value=rules.MAX_FS_HZ, help_text="Sampling rate (Hz), 125-1000.")
    samples = serializers.ListField(child=serializers.FloatField(allow_null=True), required=False, allow_empty=False,
                                    help_text="JSON encoding: the samples; null marks a missing sample.")
    # The wire name is "data". DRF's SerializerMetaclass takes declared fields out of the class, so
    # Serializer.data stays the property; the stubs cannot say so.
    data = Base64Field(  # type: ignore[assignment]
        required=False, help_text="Compact encoding: base64 of little-endian int16 or float32 samples.")
    dtype = serializers.ChoiceField(choices=sorted(DTYPES), required=False, help_text="Compact encoding: int16 (-32768 = missing) or float32.")
    scale = serializers.FloatField(required=False, default=1.0, help_text="Physical value = raw x scale + offset.")
    offset = serializers.FloatField(required=False, default=0.0)

    def to_internal_value(self, data):
        # Decode the raw list ourselves: DRF's FloatField would accept "NaN" strings and be slow.
        if isinstance(data, dict) and isinstance(data.get("samples"), list):
            samples = data["samples"]
            data = {k: v for k, v in data.items() if k != "samples"}
            validated = super().to_internal_value(data)
            try:
                validated["raw"] = decode_json_samples(samples)
            except EncodingError as exc:
                raise serializers.ValidationError({"samples": [str(exc)]}) from exc
            if len(validated["raw"]) == 0:
                raise serializers.ValidationError({"samples": ["must not be empty"]})
            validated["encoding"] = "json"
        else:
            validated = super().to_internal_value(data)
        return validated

    # Compact channels, the shape devices send: quick_validation handles them.
    _QUICK_FIELDS = ("fs", "data", "dtype", "scale", "offset")
    _QUICK_KEYS = frozenset(_QUICK_FIELDS)

    def quick_validation(self, data):
        """run_validation's result for a compact channel (WindowInput.quick_validation's part):
        None for another shape (JSON samples, unknown keys), a ValidationError for a bad value.
        Each field's own run_validation and this serializer's validate() do the checking; only
        DRF's generic serializer walk (field iteration, error collection) is skipped."""
        if type(data) is not dict or not data.keys() <= self._QUICK_KEYS:
            return None
        fields = self.fields
        attrs = {}
        for name in self._QUICK_FIELDS:
            try:
                attrs[name] = fields[name].run_validation(data.get(name, empty))
            except SkipField:
                pass
        return self.validate(attrs)

    def validate(self, attrs):
        has_data = "data" in attrs or "dtype" in attrs
        if "raw" in attrs and has_data:
            raise serializers.ValidationError("Send either samples, or data with dtype, not both.")
        if "raw" not in attrs:
            if not ("data" in attrs and "dtype" in attrs):
                raise serializers.ValidationError(
                    {"samples": ["Send samples (JSON numbers), or data with dtype (compact encoding)."]}
                )
            try:
                attrs["raw"] = decode_compact(attrs.pop("data"), attrs.pop("dtype"))
            except EncodingError as exc:
                raise serializers.ValidationError({"data": [str(exc)]}) from exc
            if len(attrs["raw"]) == 0:
                raise serializers.ValidationError({"data": ["must not be empty"]})
            attrs["encoding"] = "compact"
        for name in ("scale", "offset"):
            if not math.isfinite(attrs[name]):
                raise serializers.ValidationError({name: ["must be a finite number"]})
        if attrs["scale"] == 0:
            raise serializers.ValidationError({"scale": ["must not be zero"]})
        return attrs


class WindowInput(serializers.Serializer):
    """A synchronised ECG + PPG window. `serial` + `sequence` is the idempotency key."""

    sequence = serializers.IntegerField(min_value=0, max_value=2**63 - 1, help_text="The device's sequence number for this window.")
    serial = serializers.CharField(required=False, max_length=80, help_text="Optional: the device serial; must match the key.")
    recorded_at = AwareDateTimeField(help_text="UTC time of the first sample (ISO 8601 with zone).")
    duration_s = serializers.FloatField(min_value=rules.MIN_WINDOW_S, max_value=rules.MAX_WINDOW_S, help_text="Window length (s), 8-120.")
    ecg = ChannelInput()
    ppg = ChannelInput()

    _QUICK_FIELDS = ("sequence", "serial", "recorded_at", "duration_s")
    _QUICK_KEYS = frozenset((*_QUICK_FIELDS, *rules.CHANNELS))

    def quick_validation(self, data):
        """run_validation's result for a window of compact channels that passes every check, else
        None (then run_validation answers, with its errors). The fields are checked as
        run_validation checks them: by each field's own run_validation, ChannelInput's and this
        serializer's validate(); DRF's generic walk over the (nested) serializers, ~0.07 ms of CPU
        per window, is what is skipped. Neither serializer has validate_<field> methods or
        serializer-level validators, the only other steps of that walk."""
        if type(data) is not dict or not data.keys() <= self._QUICK_KEYS:
            return None
        fields = self.fields
        attrs = {}
        try:
            for name in self._QUICK_FIELDS:
                try:
                    attrs[name] = fields[name].run_validation(data.get(name, empty))
                except SkipField:
                    pass
            for name in rules.CHANNELS:
                channel_field = fields[name]
                assert isinstance(channel_field, ChannelInput)  # ecg and ppg are declared as such above
                channel = channel_field.quick_validation(data.get(name))
                if channel is None:
                    return None
                attrs[name] = channel
            return self.validate(attrs)
        except (serializers.ValidationError, DjangoValidationError):
            return None

    def validate(self, attrs):
        errors: dict[str, list[str]] = {}
        device = self.context.get("device")
        if device is not None and attrs.get("serial") not in (None, device.serial):
            errors["serial"] = ["does not match the device this API key belongs to"]
        problem = rules.recorded_at_problem(recorded_at=attrs["recorded_at"], now=timezone.now())
        if problem:
            errors["recorded_at"] = [problem]
        for name in rules.CHANNELS:
            channel = attrs[name]
            problem = rules.channel_length_problem(n_samples=len(channel["raw"]), fs_hz=channel["fs"], duration_s=attrs["duration_s"])
            if problem:
                errors[name] = [problem]
        if errors:
            raise serializers.ValidationError(errors)
        encodings = {attrs[name]["encoding"] for name in rules.CHANNELS}
        attrs["encoding"] = "compact" if "compact" in encodings else "json"
        attrs["channels"] = {
            name: Channel(fs=c["fs"], raw=c["raw"], scale=c["scale"], offset=c["offset"])
            for name in rules.CHANNELS
            for c in [attrs.pop(name)]
        }
        return attrs


class ParsedJSONField(serializers.JSONField):
    """A value of a body the JSON parser has read: JSON by construction, so not written out again
    to check it (DRF's JSONField does, which a deeply nested value turns into a RecursionError)."""

    def to_internal_value(self, data):
        return data


class BatchInput(serializers.Serializer):
    # Items are checked one by one in the view, so that one bad item rejects only itself.
    windows = serializers.ListField(child=ParsedJSONField(allow_null=True), min_length=1, max_length=rules.MAX_BATCH_WINDOWS,
                                    help_text="Up to 100 windows (each as for POST /api/v1/windows/), each accepted or rejected on its own.")


class WindowAccepted(serializers.Serializer):
    id = serializers.IntegerField()
    idempotency_key = serializers.CharField()
    status = serializers.CharField()
    status_url = serializers.URLField()


class AnalysisOutput(serializers.ModelSerializer):
    class Meta:
        model = WindowAnalysis
        fields = ["pipeline_version", "usable", "reasons", "issues", "features", "beat_count",
                  "heart_rate_bpm", "pat_foot_ms", "processing_ms", "created_at"]


class WindowOutput(serializers.ModelSerializer):
    idempotency_key = serializers.CharField()
    analysis = serializers.SerializerMethodField()
    raw_signal = serializers.CharField(
        read_only=True, help_text='"stored (<n> bytes)", or "raw signal purged on <date> ..." once retention dropped it.')

    class Meta:
        model = SignalWindow
        fields = ["id", "idempotency_key", "device", "patient", "sequence", "recorded_at", "duration_s",
                  "ecg_fs", "ppg_fs", "encoding", "firmware", "received_at", "status", "processed_at", "failure", "analysis",
                  "raw_signal", "raw_purged_at"]

    @extend_schema_field(AnalysisOutput(allow_null=True))
    def get_analysis(self, window: SignalWindow):
        analysis = max(window.analyses.all(), key=lambda a: a.created_at, default=None)
        return AnalysisOutput(analysis).data if analysis else None
