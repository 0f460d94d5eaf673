from django.urls import path

from therapy import apis

app_name = "therapy"
urlpatterns = [
    path("patients/<int:patient_id>/plan/", apis.PatientPlanApi.as_view(), name="patient-plan"),
    path("patients/<int:patient_id>/doses/", apis.PatientDosesApi.as_view(), name="patient-doses"),
    path("patients/<int:patient_id>/symptom-reports/", apis.PatientSymptomReportsApi.as_view(), name="patient-symptom-reports"),
    path("suggestions/", apis.SuggestionListApi.as_view(), name="suggestion-list"),
    path("suggestions/<int:suggestion_id>/", apis.SuggestionDetailApi.as_view(), name="suggestion-detail"),
    path("suggestions/<int:suggestion_id>/approve/", apis.SuggestionApproveApi.as_view(), name="suggestion-approve"),
    path("suggestions/<int:suggestion_id>/modify/", apis.SuggestionModifyApi.as_view(), name="suggestion-modify"),
    path("suggestions/<int:suggestion_id>/reject/", apis.SuggestionRejectApi.as_view(), name="suggestion-reject"),
    path("suggestions/<int:suggestion_id>/acknowledge/", apis.SuggestionAcknowledgeApi.as_view(), name="suggestion-acknowledge"),
    path("alerts/", apis.AlertListApi.as_view(), name="alert-list"),
]
