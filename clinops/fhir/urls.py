from django.urls import path

from clinops.fhir import views

app_name = "fhir"
urlpatterns = [
    # "$everything" is the FHIR operation's literal name (path() escapes the "$").
    path("Patient/<int:patient_id>/$everything", views.PatientEverythingApi.as_view(), name="patient-everything"),
]
