"""OpenAPI (drf-spectacular) description of the device API-key authentication."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class DeviceAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "clinops.permissions.DeviceAPIKeyAuthentication"
    name = "DeviceApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A device's key, issued at registration: `Authorization: Api-Key <prefix>.<secret>`.",
        }
