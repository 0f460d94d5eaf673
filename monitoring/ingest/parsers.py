"""JSON request bodies for device uploads: gzip accepted, size capped (413), before and after unzip,
then read as every API body is (clinops.base.parsers.loads_strict, lone surrogates refused as there)."""
from __future__ import annotations

import zlib
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser

from clinops.base.parsers import loads_strict, refuse_lone_surrogates


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class DeviceJSONParser(BaseParser):
    """application/json, optionally with Content-Encoding: gzip; at most WINDOW_UPLOAD_MAX_BYTES."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.WINDOW_UPLOAD_MAX_BYTES
        request = (parser_context or {}).get("request")
        meta = request.META if request is not None else {}
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
        if meta.get("HTTP_CONTENT_ENCODING", "").strip().lower() == "gzip":
            inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            try:
                body = inflater.decompress(body, limit + 1)
            except zlib.error as exc:
                raise exceptions.ParseError("The body is not valid gzip.") from exc
            if len(body) > limit or inflater.unconsumed_tail:
                raise PayloadTooLarge(f"The unzipped request body exceeds {limit} bytes.")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError("The body is not valid JSON: not UTF-8 text.") from exc
        view = (parser_context or {}).get("view")
        # Surrogates are looked for here (as loads_strict would), with the fast check, unless the
        # view checks each item of a batch itself.
        value = loads_strict(text, surrogates_checked_per_item=True)
        if not getattr(view, "surrogates_checked_per_item", False):
            refuse_lone_surrogates(value)
        return value
