"""OpenAPI (drf-spectacular): the error responses every operation can give (the device API-key scheme
is described beside its authentication class, patients/permissions.py)."""

# Every operation can answer these with the API's error envelope (clinops.base.errors.api_exception_handler):
# field errors, no or bad credentials, not allowed, unknown or not-yours id, decided twice, throttled;
# writes also: body too large, not JSON.
ERROR_RESPONSES = {
    "400": "Invalid input: `message`, `extra`, and the field errors beside them.",
    "401": "No credentials, or an unknown device key.",
    "403": "Not allowed (a revoked device, a patient without consent, another role's route).",
    "404": "No such object, or not one the caller may see.",
    "409": "The object's state does not allow this (e.g. a suggestion decided already).",
    "429": "Too many requests from this device key; retry later.",
}
WRITE_ERROR_RESPONSES = {
    "413": "The body is larger than WINDOW_UPLOAD_MAX_BYTES.",
    "415": "The body is not JSON (or gzip-compressed JSON).",
}


def declare_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: declare the error envelope {"message", "extra"} and
    the error statuses every operation may answer, so clients and schemathesis know them."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object",
        "properties": {"message": {"type": "string"}, "extra": {"type": "object", "additionalProperties": True}},
        "required": ["message", "extra"],
        "additionalProperties": True,  # DRF's field errors sit beside message and extra
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            codes = {**ERROR_RESPONSES, **(WRITE_ERROR_RESPONSES if method != "get" else {})}
            for code, description in codes.items():
                responses.setdefault(code, {"description": description, "content": error})
    return result
