from django.contrib.auth import views as auth_views
from django.urls import path

from clinops.web import auth, clinic, model_health, portal

app_name = "web"
urlpatterns = [
    path("", auth.landing, name="landing"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("login/otp/", auth.otp, name="otp"),
    path("logout/", auth_views.LogoutView.as_view(next_page="web:login"), name="logout"),
    path("clinic/", clinic.queue, name="queue"),
    path("clinic/suggestions/<int:suggestion_id>/<str:action>/", clinic.decide, name="decide"),
    path("clinic/patients/", clinic.patient_list, name="patients"),
    path("clinic/patients/<int:patient_id>/", clinic.patient_detail, name="patient"),
    path("clinic/patients/<int:patient_id>/plan/", clinic.plan_edit, name="plan"),
    path("clinic/patients/<int:patient_id>/summary/", clinic.patient_summary, name="patient-summary"),
    path("clinic/alerts/<int:alert_id>/snooze/", clinic.snooze, name="snooze"),
    path("clinic/autonomy/", clinic.autonomy, name="autonomy"),
    path("clinic/overdue/", clinic.overdue, name="overdue"),
    path("clinic/model-health/", model_health.model_health, name="model-health"),
    path("clinic/model-health/suspensions/<int:suspension_id>/lift/", model_health.suspension_lift, name="suspension-lift"),
    path("portal/", portal.home, name="portal"),
    path("portal/doses/", portal.dose_log, name="portal-dose"),
    path("portal/changes/<int:suggestion_id>/acknowledge/", portal.acknowledge, name="portal-acknowledge"),
    path("portal/cuff/", portal.cuff_reading, name="portal-cuff"),
    path("portal/symptoms/", portal.symptoms, name="portal-symptoms"),
    path("portal/devices/", portal.devices, name="portal-devices"),
    path("portal/history/", portal.history, name="portal-history"),
    path("portal/summary/", portal.summary, name="portal-summary"),
]
