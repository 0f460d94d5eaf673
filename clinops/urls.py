from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from clinops import views

# Swagger UI and Redoc (the schema, no patient data) style themselves with inline <style>, and
# Redoc parses the schema in a worker made from a blob; their pages allow that and nothing more.
# The split Swagger view serves its start-up script as a file, so no inline script is needed.
api_docs_csp = csp_update({"style-src": [UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin, JSON answers).
    path("favicon.ico", RedirectView.as_view(url=static("web/favicon.svg"), http_method_names=["get", "head"]), name="favicon"),
    path("api/v1/", include("patients.urls")),
    path("api/v1/", include("monitoring.urls")),
    path("api/v1/", include("therapy.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/docs/", api_docs_csp(SpectacularSwaggerSplitView.as_view(url_name="api-schema")), name="api-docs"),
    path("api/v1/redoc/", api_docs_csp(SpectacularRedocView.as_view(url_name="api-schema")), name="api-redoc"),
    path("fhir/", include("clinops.fhir.urls")),
    path("", include("clinops.web.urls")),
]

handler404 = "clinops.views.not_found"
