"""The API's one pagination: limit/offset with a ceiling."""
from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """LimitOffsetPagination with a ceiling. DRF's has none, so ?limit=62272507225849520128 reached
    the database as a LIMIT neither SQLite nor PostgreSQL can hold: a 500 instead of a page."""

    max_limit = 1000
