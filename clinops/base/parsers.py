"""JSON request bodies, read strictly: what JSON does not allow (NaN, Infinity) and nesting too deep
for Python to parse are answered as parse errors (400), never as a 500. `holds_nul` finds what
PostgreSQL cannot store in free-form JSON fields (a NUL character), for their serializers."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers


def _reject_nan_literals(token: str) -> Any:
    # Python's json accepts NaN/Infinity literals that JSON does not; a client sending them is wrong.
    raise exceptions.ParseError(f"JSON holds the non-standard literal {token}; send finite numbers or null.")


def _any_string(value: Any, found: Callable[[str], bool]) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if found(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def holds_nul(value: Any) -> bool:
    """Whether a NUL character is in any string (key or value) of a parsed JSON value: PostgreSQL
    keeps none in text or jsonb, so a serializer of free-form JSON refuses it by field name."""
    return _any_string(value, lambda text: "\x00" in text)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def holds_lone_surrogate(value: Any) -> bool:
    """Whether any string of a parsed JSON value holds a lone UTF-16 surrogate ("\\ud800"): JSON
    lets one be escaped, but it is not text, and neither database nor UTF-8 can keep it.

    A lone surrogate is never ASCII, and str.isascii() reads a flag CPython keeps on every string (no
    scan), so only a non-ASCII string is searched: a 30-s window's two base64 strings (~40 KB) cost
    0.13 ms of CPU per window when searched character by character, an eighth of an upload's."""
    return _any_string(value, lambda text: not text.isascii() and _LONE_SURROGATE.search(text) is not None)


LONE_SURROGATE_MESSAGE = "not valid text: holds a lone UTF-16 surrogate (\\ud800-\\udfff)"


def refuse_lone_surrogates(value: Any) -> None:
    """Raise a 400 for a parsed body holding a lone surrogate, naming the top-level field it is in
    (as any refused value is named), or the body as a whole when it is not an object."""
    if not holds_lone_surrogate(value):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if holds_lone_surrogate(key) or holds_lone_surrogate(item):
                name = key if not holds_lone_surrogate(key) else "non_field_errors"
                raise exceptions.ValidationError({name: [LONE_SURROGATE_MESSAGE]})
    raise exceptions.ParseError(f"The body is not valid JSON text: it is {LONE_SURROGATE_MESSAGE}.")


def loads_strict(text: str, *, surrogates_checked_per_item: bool = False) -> Any:
    """Parse a JSON text, raising DRF's ParseError (400) for anything that is not JSON we can keep.
    A lone surrogate anywhere refuses the body, unless the caller checks each item of a batch itself
    (`surrogates_checked_per_item`, so one bad item rejects only itself)."""
    try:
        value = json.loads(text, parse_constant=_reject_nan_literals)
    except RecursionError as exc:
        raise exceptions.ParseError("The body nests too deeply.") from exc
    except ValueError as exc:  # also JSONDecodeError and integers of > 4300 digits
        raise exceptions.ParseError(f"The body is not valid JSON: {str(exc)[:200]}") from exc
    if not surrogates_checked_per_item:
        refuse_lone_surrogates(value)
    return value


class JSONParser(parsers.JSONParser):
    """The API's application/json parser (REST_FRAMEWORK DEFAULT_PARSER_CLASSES): DRF's, read with
    loads_strict."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding) if stream is not None else ""
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"The body is not valid JSON: not {encoding} text.") from exc
        return loads_strict(text)
