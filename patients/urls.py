from django.urls import path

from patients import apis

app_name = "patients"
urlpatterns = [
    path("patients/", apis.PatientListApi.as_view(), name="patient-list"),
    path("patients/<int:patient_id>/", apis.PatientDetailApi.as_view(), name="patient-detail"),
    path("devices/<int:device_id>/revoke/", apis.DeviceRevokeApi.as_view(), name="device-revoke"),
    path("device/", apis.DeviceSelfApi.as_view(), name="device-self"),
]
