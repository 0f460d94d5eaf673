"""One application error type, and how the API shows it: {"message", "extra"} (+ DRF field errors)."""
from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from clinops.base.parsers import holds_lone_surrogate, holds_nul


class ApplicationError(Exception):
    """A request the domain refuses. `transient` marks failures worth retrying (e.g. a dependency)."""

    def __init__(
        self,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.status_code = status_code
        self.transient = transient


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        headers = {"Retry-After": "30"} if exc.transient else None
        return Response(
            {"message": exc.message, "extra": exc.extra}, status=exc.status_code, headers=headers
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        # Field-level errors stay where DRF puts them; a summary message is added beside them.
        detail = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = {"message": "Validation failed.", "extra": {"fields": detail}, **detail}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"message": str(response.data["detail"]), "extra": {}}
    return response


def clean_text(field: str, value: str, *, max_length: int, required: bool = False, what: str = "") -> str:
    """A person's free text, stripped, or an ApplicationError (400) naming `field`: too long, a NUL
    character or a lone surrogate (PostgreSQL and UTF-8 keep neither; SQLite would store the long
    text silently), or empty when `required` (`what` says what is missing). The same input gets the
    same answer on every database."""
    if not isinstance(value, str):
        raise ApplicationError("Enter text.", extra={"fields": {field: ["must be text"]}})
    text = value.strip()
    problems = []
    if required and not text:
        problems.append("required")
    if len(text) > max_length:
        problems.append(f"at most {max_length} characters (got {len(text)})")
    if holds_nul(text) or holds_lone_surrogate(text):
        problems.append("holds a character that is not text (NUL or a lone surrogate)")
    if problems:
        message = what if (what and problems == ["required"]) else f"The {field.replace('_', ' ')} is not accepted."
        raise ApplicationError(message, extra={"fields": {field: problems}})
    return text
