"""Thin API views for people and devices: validate -> one service or selector -> respond."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from patients import services
from patients.models import Device, Patient
from patients.permissions import DeviceAPIKeyAuthentication, IsDevice, IsPerson, calling_device
from patients.selectors import devices_visible_to, patients_visible_to


class PatientOutput(serializers.ModelSerializer):
    age = serializers.SerializerMethodField()

    class Meta:
        model = Patient
        fields = ["id", "medical_record_number", "given_name", "family_name", "date_of_birth", "age", "sex", "consent_status"]

    def get_age(self, patient: Patient) -> int:
        from django.utils import timezone

        today = timezone.localdate()
        dob = patient.date_of_birth
        return today.year - dob.year - ((today.month, today.day) < (dob.month, dob.day))


class DeviceOutput(serializers.ModelSerializer):
    revoked = serializers.BooleanField(source="is_revoked")

    class Meta:
        model = Device
        fields = ["id", "patient", "make", "model", "firmware", "serial", "registered_at", "revoked", "revoked_at", "last_seen_at"]



class PatientListApi(ListAPIView):
    """Patients the caller may see (a clinician: their care teams'; a patient: themself)."""

    permission_classes = [IsPerson]
    serializer_class = PatientOutput

    def get_queryset(self):
        return patients_visible_to(self.request.user)


class PatientDetailApi(APIView):
    """One patient; 404 (not 403) for a patient outside the caller's care, so ids reveal nothing."""

    permission_classes = [IsPerson]

    @extend_schema(responses=PatientOutput)
    def get(self, request: Request, patient_id: int) -> Response:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        return Response(PatientOutput(patient).data)


class DeviceRevokeApi(APIView):
    """Revoke a device (lost, replaced, compromised): its key stops working at once."""

    permission_classes = [IsPerson]

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=255)

    @extend_schema(request=InputSerializer, responses=DeviceOutput)
    def post(self, request: Request, device_id: int) -> Response:
        device = get_object_or_404(devices_visible_to(request.user), pk=device_id)
        if not request.user.has_perm("patients.change_device", device):
            return Response({"message": "Only the patient's care team may revoke a device.", "extra": {}}, status=status.HTTP_403_FORBIDDEN)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        device = services.device_revoke(actor=request.user, device=device, reason=payload.validated_data["reason"])
        return Response(DeviceOutput(device).data)


class DeviceSelfApi(APIView):
    """For device makers: which device and patient this API key belongs to (checks a key works)."""

    authentication_classes = [DeviceAPIKeyAuthentication]
    permission_classes = [IsDevice]

    @extend_schema(responses=DeviceOutput)
    def get(self, request: Request) -> Response:
        return Response(DeviceOutput(calling_device(request)).data)
