from django.urls import path

from monitoring.ingest import apis

app_name = "monitoring"
urlpatterns = [
    path("windows/", apis.WindowUploadApi.as_view(), name="window-upload"),
    path("windows/batch/", apis.WindowBatchUploadApi.as_view(), name="window-batch-upload"),
    path("windows/<int:window_id>/", apis.WindowDetailApi.as_view(), name="window-detail"),
    path("patients/<int:patient_id>/cuff-readings/", apis.PatientCuffReadingApi.as_view(), name="patient-cuff-readings"),
    path("cuff-readings/", apis.DeviceCuffReadingApi.as_view(), name="device-cuff-readings"),
]
