from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from clinops import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("api/v1/", include("patients.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
]
