from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from clinops import views

# Swagger UI (the schema, no patient data) styles itself with inline <style>; its page allows that
# and nothing more. The split view serves its start-up script as a file, so no inline script.
api_docs_csp = csp_update({"style-src": [UNSAFE_INLINE]})

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    # Prometheus, with a bearer token (METRICS_TOKEN); 404 without one configured.
    path("metrics", views.metrics_view, name="metrics"),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin, JSON answers).
    path("favicon.ico", RedirectView.as_view(url=static("web/favicon.svg"), http_method_names=["get", "head"]), name="favicon"),
    path("api/v1/", include("patients.urls")),
    path("api/v1/", include("monitoring.urls")),
    path("api/v1/", include("therapy.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/docs/", api_docs_csp(SpectacularSwaggerSplitView.as_view(url_name="api-schema")), name="api-docs"),
    # Redoc's bundle always asks cdn.redoc.ly for its logo (no option turns it off): the page went
    # to another origin and the CSP's refusal was a console error. Its old address leads to Swagger UI.
    path("api/v1/redoc/", RedirectView.as_view(pattern_name="api-docs", http_method_names=["get", "head"]), name="api-redoc"),
    path("fhir/", include("clinops.fhir.urls")),
    path("", include("clinops.web.urls")),
]

handler404 = "clinops.views.not_found"
