"""Small template filters for the web app."""
from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(share: float | None) -> str:
    """0.83 -> "83 %"."""
    return "—" if share is None else f"{100 * float(share):.0f} %"
