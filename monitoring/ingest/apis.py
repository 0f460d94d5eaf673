"""Device window API: upload one, upload a batch, read a window's status and result."""
from __future__ import annotations

import threading

import redis
import structlog
from django.conf import settings
from django.core.cache import cache as default_cache
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from redis.exceptions import RedisError
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from clinops.base.parsers import refuse_lone_surrogates
from monitoring import selectors
from monitoring.bp import cuff_calibration
from monitoring.ingest import intake
from monitoring.ingest.parsers import DeviceJSONParser, PayloadTooLarge
from monitoring.ingest.serializers import AwareDateTimeField, BatchInput, WindowAccepted, WindowInput, WindowOutput
from monitoring.models import Arm, CuffReading, CuffSource, Position
from monitoring.selectors import windows_visible_to
from patients.models import Device, DeviceKind, Role
from patients.permissions import DeviceAPIKeyAuthentication, DevicePrincipal, IsDevice, calling_device
from patients.selectors import patients_visible_to

log = structlog.get_logger(__name__)

# Stands for a window's id in its status URL, reversed once per request (DeviceUploadApi._answerer).
_PLACEHOLDER_ID = 918273645546372819


# DRF's sliding window (SimpleRateThrottle) in one Redis round trip: the times of the requests let
# through within the last `duration` seconds, newest first; older ones are dropped, and this request
# is let through (and its time added) while fewer than `limit` are left. Returns (let through,
# requests in the window, the oldest one's time).
_SLIDING_WINDOW_LUA = """
local key, now, duration, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
while true do
  local oldest = redis.call('LINDEX', key, -1)
  if not oldest or tonumber(oldest) > now - duration then break end
  redis.call('RPOP', key)
end
local count = redis.call('LLEN', key)
local allowed = 0
if count < limit then
  redis.call('LPUSH', key, ARGV[1])
  redis.call('EXPIRE', key, ARGV[2])
  count = count + 1
  allowed = 1
end
return {allowed, count, redis.call('LINDEX', key, -1) or ''}
"""


class DeviceUploadThrottle(SimpleRateThrottle):
    """Uploads per device key, counted in the shared Redis cache (429 beyond the rate).

    DRF's sliding window, kept in Redis as a list run by one Lua script: one round trip per
    request instead of DRF's cache.get + cache.set of the pickled history (each through a new
    redis.Redis client built by Django's cache: 0.4 ms of the web worker's CPU per request, 0.1
    now), and atomic, so concurrent uploads of one key can no longer each count over the other.
    With a cache that is not Redis, DRF's own code runs."""

    scope = "device_upload"
    cache_format = "throttle_window_%(scope)s_%(ident)s"  # a list, not DRF's pickled history
    # Set by SimpleRateThrottle.__init__ from parse_rate(rate) (None when there is no rate); DRF's
    # stubs leave them out.
    num_requests: int | None
    duration: int | None

    def get_cache_key(self, request, view):
        if isinstance(request.user, DevicePrincipal):
            return self.cache_format % {"scope": self.scope, "ident": request.user.device.pk}
        return None

    def allow_request(self, request, view) -> bool:
        # With Redis down the counter cannot be read. Refusing would drop a patient's data for an
        # outage of a rate limiter, so the upload is let through (stored in the database; the
        # sweeper queues it once the broker is back) and the outage is logged.
        try:
            script = _sliding_window_script(self.cache)
            if script is None:
                return super().allow_request(request, view)
            if self.rate is None:
                return True
            self.key = self.get_cache_key(request, view)
            if self.key is None:
                return True
            self.now = self.timer()
            allowed, count, oldest = script(keys=[self.cache.make_and_validate_key(self.key)],
                                            args=[repr(self.now), self.duration, self.num_requests])
            # What wait() reads (DRF's formula, for Retry-After): how many are in the window, the oldest.
            self.history = [float(oldest)] * int(count) if count else []
            return bool(allowed)
        except RedisError as exc:
            log.warning("device_upload.throttle_unavailable", error=exc.__class__.__name__)
            return True


def _sliding_window_script(cache):
    """The script, registered on a redis.Redis client over the cache's own connection pool (one
    client per cache backend instance, kept on it), or None when the cache is not Django's
    RedisCache. `cache` is DRF's: django.core.cache.cache (a proxy of caches["default"]) or a backend."""
    backend = caches["default"] if cache is default_cache else cache
    if not isinstance(backend, RedisCache):
        return None
    client_side = backend._cache
    script = getattr(client_side, "_clinops_sliding_window", None)
    if script is None:
        # Django's RedisCache offers no public way to its connection pool; the private method is the
        # one its own commands use (the throttle tests cover it on every Django upgrade).
        pool = client_side._get_connection_pool(True)  # type: ignore[attr-defined]
        script = redis.Redis(connection_pool=pool).register_script(_SLIDING_WINDOW_LUA)
        setattr(client_side, "_clinops_sliding_window", script)  # kept with the client: one per backend
    return script


_checkers = threading.local()


def window_checker(device) -> WindowInput:
    """A WindowInput for `device`'s windows, built once per thread and reused from request to
    request (only its context changes): building one deep-copies its fields and its channels'
    fields, 0.2 ms of CPU per request. Validation keeps no other state on the serializer
    (run_validation and quick_validation return what they read), and a thread answers one
    request at a time."""
    checker = getattr(_checkers, "window", None)
    if checker is None:
        checker = _checkers.window = WindowInput()
    checker._context = {"device": device}  # what `self.context` reads (the root serializer's)
    return checker


class DeviceUploadApi(APIView):
    authentication_classes = [DeviceAPIKeyAuthentication]
    permission_classes = [IsDevice]
    parser_classes = [DeviceJSONParser]
    throttle_classes = [DeviceUploadThrottle]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # Refuse an oversized body before reading it (the parser also caps what it reads).
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > settings.WINDOW_UPLOAD_MAX_BYTES:
            raise PayloadTooLarge(f"The request body exceeds {settings.WINDOW_UPLOAD_MAX_BYTES} bytes.")

    def _accepted(self, request: Request, window) -> dict:
        return self._answerer(request)(window)

    @staticmethod
    def _answerer(request: Request):
        """window -> the answer for it. What every window of the request shares is worked out once:
        reverse() and build_absolute_uri() (which checks the Host header against ALLOWED_HOSTS)
        per window were 0.03 ms of CPU each in a batch. The URL is the reversed one with the id put
        in place of a placeholder id (the route's <int:window_id> is the id's decimal digits)."""
        serial = calling_device(request).serial
        placeholder = str(_PLACEHOLDER_ID)
        url = request.build_absolute_uri(reverse("monitoring:window-detail", args=[_PLACEHOLDER_ID]))
        before, _, after = url.rpartition(placeholder)

        def answer(window) -> dict:
            return {
                "id": window.pk,
                "idempotency_key": f"{serial}:{window.sequence}",
                "status": window.status,
                "status_url": f"{before}{window.pk}{after}",
            }

        return answer

    @staticmethod
    def _validated(device, payload, checker: WindowInput | None = None) -> intake.WindowUpload:
        """One window's fields, checked (ValidationError with an error per field otherwise).
        `checker`: window_checker(device), reused for every window of a batch, as DRF's
        ListSerializer reuses its child (building a serializer deep-copies its fields: ~0.2 ms).
        A window that passes every check is read by its quick_validation; any other goes through
        DRF's run_validation (or, for a single upload, is_valid), which gives the errors."""
        if not isinstance(payload, dict):
            raise serializers.ValidationError({"non_field_errors": ["A window must be a JSON object."]})
        refuse_lone_surrogates(payload)
        fields = (checker or window_checker(device)).quick_validation(payload)
        if fields is not None:
            pass
        elif checker is None:
            upload = WindowInput(data=payload, context={"device": device})
            upload.is_valid(raise_exception=True)
            fields = upload.validated_data
        else:
            fields = checker.run_validation(payload)
        return intake.WindowUpload(
            sequence=fields["sequence"], recorded_at=fields["recorded_at"], duration_s=fields["duration_s"],
            encoding=fields["encoding"], channels=fields["channels"],
        )

    def _receive(self, request: Request, payload) -> tuple[dict, bool]:
        device = calling_device(request)
        window, created = intake.window_receive(device=device, upload=self._validated(device, payload))
        return self._accepted(request, window), created


class WindowUploadApi(DeviceUploadApi):
    """Upload one window. 202 when stored and queued; 200 with the original for a repeated key."""

    @extend_schema(
        request=WindowInput,
        responses={202: WindowAccepted, 200: WindowAccepted, 400: OpenApiResponse(description="Field-level errors"),
                   401: OpenApiResponse(description="Unknown key"), 403: OpenApiResponse(description="Revoked device"),
                   413: OpenApiResponse(description="Body too large"), 429: OpenApiResponse(description="Too many uploads")},
    )
    def post(self, request: Request) -> Response:
        body, created = self._receive(request, request.data)
        return Response(body, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)


class WindowBatchUploadApi(DeviceUploadApi):
    """Upload up to 100 windows; each is accepted, recognised as a duplicate, or rejected on its own."""

    # A lone surrogate (or a null) in one window rejects that window only, like any other bad field.
    surrogates_checked_per_item = True

    @extend_schema(
        request=BatchInput,
        responses={200: inline_serializer("BatchResult", {
            "accepted": serializers.IntegerField(), "duplicates": serializers.IntegerField(),
            "rejected": serializers.IntegerField(),
            "results": serializers.ListField(child=serializers.DictField()),
        })},
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"windows": ['The body must be {"windows": [...]}.']})
        batch = BatchInput(data=request.data)
        batch.is_valid(raise_exception=True)
        device = calling_device(request)
        # Every window is checked first; a rejected one stores nothing. The valid ones are then
        # stored together (one duplicate lookup, one insert, one enqueue: intake.windows_receive),
        # each still answered on its own, in the order sent.
        results: list[dict | None] = []
        valid: list[tuple[int, intake.WindowUpload]] = []
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
        checker = window_checker(device)
        for index, payload in enumerate(batch.validated_data["windows"]):
            try:
                valid.append((index, self._validated(device, payload, checker)))
                results.append(None)
            except serializers.ValidationError as exc:
                counts["rejected"] += 1
                results.append({"index": index, "result": "rejected", "errors": exc.detail})
        if valid:
            received = intake.windows_receive(device=device, uploads=[upload for _, upload in valid])
            answer = self._answerer(request)
            for (index, _), (window, created) in zip(valid, received, strict=True):
                outcome = "accepted" if created else "duplicate"
                counts[outcome] += 1
                results[index] = {"index": index, "result": outcome, **answer(window)}
        return Response({"accepted": counts["accepted"], "duplicates": counts["duplicate"],
                         "rejected": counts["rejected"], "results": results})


class WindowDetailApi(APIView):
    """A window's status and, once processed, its quality verdict and features.

    The uploading device and the patient's care team only; anyone else gets 404.
    """

    authentication_classes = [DeviceAPIKeyAuthentication, SessionAuthentication]

    @extend_schema(responses=WindowOutput)
    def get(self, request: Request, window_id: int) -> Response:
        window = get_object_or_404(windows_visible_to(request.user), pk=window_id)
        return Response(WindowOutput(window).data)


class CuffReadingInput(serializers.Serializer):
    measured_at = AwareDateTimeField(help_text="When the cuff measured (ISO 8601 with zone).")
    sbp_mmhg = serializers.FloatField(help_text="Systolic (mmHg).")
    dbp_mmhg = serializers.FloatField(help_text="Diastolic (mmHg).")
    pulse_bpm = serializers.FloatField(required=False, allow_null=True, help_text="Pulse (beats/min), when the cuff shows it.")
    arm = serializers.ChoiceField(choices=Arm.choices, required=False, allow_blank=True)
    position = serializers.ChoiceField(choices=Position.choices, required=False, allow_blank=True)


class PatientCuffReadingInput(CuffReadingInput):
    cuff = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                    help_text="Id of the patient's registered cuff that measured (GET /api/v1/device/ "
                                              "on a cuff's key, or the portal); omitted: a cuff not registered, whose "
                                              "readings never support an automatic change.")


class CuffReadingOutput(serializers.ModelSerializer):
    calibrated = serializers.SerializerMethodField()
    validated_cuff = serializers.SerializerMethodField()

    class Meta:
        model = CuffReading
        fields = ["id", "patient", "measured_at", "sbp_mmhg", "dbp_mmhg", "pulse_bpm", "arm", "position", "cuff",
                  "validated_cuff", "source", "created_at", "calibrated"]

    def get_calibrated(self, reading: CuffReading) -> bool:
        return hasattr(reading, "calibration")

    def get_validated_cuff(self, reading: CuffReading) -> bool:
        """The cuff that measured is of a model an administrator marked validated."""
        return selectors.cuff_is_validated(reading.cuff)


class PatientCuffReadingApi(APIView):
    """A cuff reading entered by the patient (for themself) or by a clinician of the care team."""

    @extend_schema(request=PatientCuffReadingInput, responses={201: CuffReadingOutput})
    def post(self, request: Request, patient_id: int) -> Response:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        if getattr(request.user, "role", None) == Role.PATIENT:
            source = CuffSource.PATIENT
        elif request.user.has_perm("patients.change_patient", patient):
            source = CuffSource.CLINICIAN
        else:
            return Response({"message": "Only the patient or their care team may enter a cuff reading.", "extra": {}},
                            status=status.HTTP_403_FORBIDDEN)
        payload = PatientCuffReadingInput(data=request.data)
        payload.is_valid(raise_exception=True)
        values = dict(payload.validated_data)
        cuff_id = values.pop("cuff", None)
        cuff = Device.objects.filter(pk=cuff_id).first() if cuff_id else None
        if cuff_id and cuff is None:
            return Response({"message": "The cuff reading is not plausible.",
                             "extra": {"fields": {"cuff": ["is not one of this patient's registered cuffs"]}}},
                            status=status.HTTP_400_BAD_REQUEST)
        reading = cuff_calibration.cuff_reading_record(actor=request.user, patient=patient, source=source, cuff=cuff, **values)
        return Response(CuffReadingOutput(reading).data, status=status.HTTP_201_CREATED)


class DeviceCuffReadingApi(APIView):
    """A reading uploaded by a connected cuff (a device bound to the patient)."""

    authentication_classes = [DeviceAPIKeyAuthentication]
    permission_classes = [IsDevice]
    parser_classes = [DeviceJSONParser]  # like window uploads: gzip accepted, size capped
    throttle_classes = [DeviceUploadThrottle]

    @extend_schema(request=CuffReadingInput, responses={201: CuffReadingOutput})
    def post(self, request: Request) -> Response:
        payload = CuffReadingInput(data=request.data)
        payload.is_valid(raise_exception=True)
        device = calling_device(request)
        # A connected cuff is the cuff that measured; a wearable relaying a reading names no cuff.
        cuff = device if device.kind == DeviceKind.CUFF else None
        reading = cuff_calibration.cuff_reading_record(actor=device, patient=device.patient, source=CuffSource.DEVICE,
                                               cuff=cuff, **payload.validated_data)
        return Response(CuffReadingOutput(reading).data, status=status.HTTP_201_CREATED)
